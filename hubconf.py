"""torch.hub entry points of essl.

    model = torch.hub.load("path/to/essl", "backbone", path="export.safetensors", source="local")

``path`` is an export (``essl export RUN OUT``), a run folder, or a released checkpoint of the official E-SSL
ImageNet scripts; the backbone comes back in eval mode with its metadata (architecture, input size,
normalisation, ...) as ``model.essl_metadata``.
"""

dependencies = ["torch", "kornia", "safetensors", "yaml"]


def backbone(path, arch=None):
    """An essl backbone in eval mode, mapping normalised images (N, C, H, W) to features (N, feature_dim)."""
    from essl import load_backbone

    model, metadata = load_backbone(path, arch=arch)
    model.essl_metadata = metadata
    return model

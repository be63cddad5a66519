"""Transformation groups: distinct elements, consistent labels, inverses, composition, products, uniform sampling.

Every expected value is computed here with plain torch / numpy / scipy code, independent of essl.groups.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from essl.errors import EsslError
from essl.groups import GROUPS, ProductGroup, make_group

torch.set_num_threads(1)

SINGLE = ["rotation", "hflip", "vflip", "grayscale", "inversion", "jigsaw", "blur", "translation"]
ALL = SINGLE + ["rotation*hflip", "hflip*inversion", "translation*vflip"]
INVERTIBLE = ["rotation", "hflip", "vflip", "inversion", "jigsaw", "translation"]
NOT_INVERTIBLE = ["grayscale", "blur"]
PRODUCTS = ["rotation*hflip", "hflip*inversion", "translation*vflip"]


def generic(n: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A generic random [0, 1] batch: no symmetry, so distinct group elements give distinct images."""
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------- distinct elements
@pytest.mark.parametrize("name", ALL)
def test_elements_are_distinct(name):
    g = make_group(name)
    x = generic()
    outs = [g.apply(x, k) for k in range(g.order)]
    assert torch.equal(outs[0], x), "element 0 must be the identity"
    for a, b in itertools.combinations(range(g.order), 2):
        diff = (outs[a] - outs[b]).abs().max().item()
        assert diff > 1e-3, f"{name}: elements {a} and {b} give the same image"


def test_known_orders():
    assert set(SINGLE) <= set(GROUPS)
    expected = {
        "rotation": 4,
        "hflip": 2,
        "vflip": 2,
        "grayscale": 2,
        "inversion": 2,
        "jigsaw": 24,
        "blur": 4,
        "translation": 4,
        "rotation*hflip": 8,
        "rotation*hflip*vflip": 16,
    }
    for name, order in expected.items():
        assert make_group(name).order == order, name


# --------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("name", ALL)
def test_orbit_blocks_match_apply_and_labels(name):
    g = make_group(name)
    x = generic(n=3)
    out, labels = g.orbit(x)
    assert out.shape == (3 * g.order, 3, 32, 32)
    assert labels.tolist() == [k for k in range(g.order) for _ in range(3)]
    for k in range(g.order):
        assert torch.equal(out[3 * k : 3 * (k + 1)], g.apply(x, k))


def test_rotation_labels_are_torch_rot90_and_the_official_flip_transpose():
    g = make_group("rotation")
    x = generic(n=2, size=8)
    for k in range(4):
        assert torch.equal(g.apply(x, k), torch.rot90(x, k, dims=(2, 3)))
    # rdangovs/essl rotate_images: 90° = flip(3).transpose(2,3), 180° = flip(3).flip(2), 270° = transpose(2,3).flip(3)
    assert torch.equal(g.apply(x, 1), x.flip(3).transpose(2, 3))
    assert torch.equal(g.apply(x, 2), x.flip(3).flip(2))
    assert torch.equal(g.apply(x, 3), x.transpose(2, 3).flip(3))


def test_flips_inversion_grayscale_values():
    x = generic(n=2, size=6)
    assert torch.equal(make_group("hflip").apply(x, 1), torch.from_numpy(x.numpy()[..., ::-1].copy()))
    assert torch.equal(make_group("vflip").apply(x, 1), torch.from_numpy(x.numpy()[..., ::-1, :].copy()))
    assert torch.allclose(make_group("inversion").apply(x, 1), 1 - x)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    gray = make_group("grayscale").apply(x, 1)
    assert gray.shape == x.shape
    for c in range(3):
        assert torch.allclose(gray[:, c], luma, atol=1e-6)


def test_jigsaw_matches_a_plain_quadrant_reference():
    g = make_group("jigsaw")
    x = generic(n=1, c=2, size=6).numpy()
    perms = list(itertools.permutations(range(4)))
    assert perms[0] == (0, 1, 2, 3)
    corners = [(0, 0), (0, 3), (3, 0), (3, 3)]  # top-left, top-right, bottom-left, bottom-right
    for k, p in enumerate(perms):
        ref = np.empty_like(x)
        for i, src in enumerate(p):
            (r, c), (sr, sc) = corners[i], corners[src]
            ref[..., r : r + 3, c : c + 3] = x[..., sr : sr + 3, sc : sc + 3]
        assert np.array_equal(g.apply(torch.from_numpy(x), k).numpy(), ref), k


def test_translation_matches_numpy_roll():
    g = make_group("translation")
    x = generic(n=2, size=8)
    shifts = [(0, 0), (0, 4), (4, 0), (4, 4)]
    for k, s in enumerate(shifts):
        assert np.array_equal(g.apply(x, k).numpy(), np.roll(x.numpy(), s, axis=(2, 3)))


def test_blur_matches_scipy_gaussian_filter():
    g = make_group("blur")
    x = generic(n=1, c=2, size=32, seed=3)
    for k, sigma in enumerate([0.0, 1.0, 2.0, 3.0]):  # at 32 px the levels are the nominal pixels
        out = g.apply(x, k)
        if sigma == 0:
            assert torch.equal(out, x)
            continue
        # torch 'reflect' padding is scipy's 'mirror'; scipy's radius int(truncate*σ + 0.5) equals ceil(3σ) here
        ref = ndimage.gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
        assert np.allclose(out.numpy(), ref, atol=1e-5), k
    # levels scale with the image: at 16 px level 2 has σ = 1 px and level 3 σ = 1.5 px
    y = generic(n=1, c=1, size=16, seed=4)
    for k, sigma in ((2, 1.0), (3, 1.5)):
        ref = ndimage.gaussian_filter(y.double().numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
        assert np.allclose(g.apply(y, k).numpy(), ref, atol=1e-5)


def test_blur_levels_increase_smoothing():
    g = make_group("blur")
    x = generic(n=4, size=28)
    roughness = [(g.apply(x, k).diff(dim=-1).abs().mean()).item() for k in range(4)]
    assert all(b < a for a, b in zip(roughness, roughness[1:])), roughness


# --------------------------------------------------------------------------------------- inverses
@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_recovers_input(name):
    g = make_group(name)
    x = generic(size=8)
    for k in range(g.order):
        assert torch.equal(g.apply(g.apply(x, k), g.inverse(k)), x), (name, k)
        assert torch.equal(g.apply_inverse(g.apply(x, k), k), x), (name, k)


@pytest.mark.parametrize("name", PRODUCTS)
def test_product_apply_inverse_recovers_input(name):
    g = make_group(name)
    x = generic(size=8)
    for k in range(g.order):
        assert torch.equal(g.apply_inverse(g.apply(x, k), k), x), (name, k)


@pytest.mark.parametrize("name", NOT_INVERTIBLE)
def test_non_invertible_transformations_say_so(name):
    g = make_group(name)
    with pytest.raises(EsslError, match="not invertible"):
        g.inverse(1)
    with pytest.raises(EsslError, match="not a group"):
        g.compose(1, 1)


# --------------------------------------------------------------------------------------- composition
@pytest.mark.parametrize("name", INVERTIBLE)
def test_composition_is_closed_and_a_group(name):
    g = make_group(name)
    x = generic(size=8)
    n = g.order
    table = [[g.compose(a, b) for b in range(n)] for a in range(n)]
    for a in range(n):
        assert sorted(table[a]) == list(range(n))  # each row is a permutation (Latin square)
        assert table[a][0] == a and table[0][a] == a  # 0 is the identity
        assert table[a][g.inverse(a)] == 0
        for b in range(n):
            assert torch.equal(g.apply(g.apply(x, b), a), g.apply(x, table[a][b])), (name, a, b)
    for a, b, c in itertools.product(range(n), repeat=3):  # associativity
        assert table[table[a][b]][c] == table[a][table[b][c]]


def test_rotation_composition_adds_quarter_turns():
    g = make_group("rotation")
    x = generic(size=8)
    for a, b in itertools.product(range(4), repeat=2):
        assert g.compose(a, b) == (a + b) % 4
        assert torch.equal(g.apply(g.apply(x, a), b), torch.rot90(x, (a + b) % 4, dims=(2, 3)))


def test_jigsaw_is_not_commutative():
    g = make_group("jigsaw")
    assert any(g.compose(a, b) != g.compose(b, a) for a in range(24) for b in range(24))


def test_rotation_times_hflip_is_closed_dihedral_group():
    """rotation*hflip is D4: the composition of any two elements is again one of the 8 (found by search)."""
    g = make_group("rotation*hflip")
    x = generic(size=8)
    images = [g.apply(x, k) for k in range(8)]
    for a, b in itertools.product(range(8), repeat=2):
        y = g.apply(g.apply(x, b), a)
        assert sum(torch.equal(y, im) for im in images) == 1, (a, b)


# --------------------------------------------------------------------------------------- products
def test_product_labels_decode_to_components():
    g = make_group("rotation*hflip")
    assert isinstance(g, ProductGroup) and g.order == 8 and g.name == "rotationxhflip"
    x = generic(n=2, size=8)
    out, labels = g.orbit(x)
    a, b = g.decode(labels)
    assert torch.equal(g.encode(a, b), labels)
    for i in range(len(labels)):
        flipped = x[i % 2].flip(-1) if b[i] else x[i % 2]
        assert torch.equal(out[i], torch.rot90(flipped, int(a[i]), dims=(-2, -1))), i
    assert set(zip(a.tolist(), b.tolist())) == set(itertools.product(range(4), range(2)))


def test_make_group_rejects_unknown_names():
    with pytest.raises(EsslError, match="Unknown transformation group 'rotaton'"):
        make_group("rotaton")
    with pytest.raises(EsslError, match="Known groups"):
        make_group("rotation*nope")


# --------------------------------------------------------------------------------------- input checks
def test_grayscale_refuses_one_channel_images():
    g = make_group("grayscale")
    x = generic(c=1, size=8)
    for call in (lambda: g.orbit(x), lambda: g.sample(x), lambda: g.apply(x, 1)):
        with pytest.raises(EsslError, match="1-channel data it is the identity"):
            call()


@pytest.mark.parametrize("name", ["jigsaw", "translation"])
def test_odd_sizes_are_refused_where_halves_are_needed(name):
    with pytest.raises(EsslError, match="even image height and width"):
        make_group(name).orbit(generic(size=7))


def test_rotation_refuses_non_square_images():
    with pytest.raises(EsslError, match="square"):
        make_group("rotation").orbit(torch.rand(2, 1, 8, 6))


# --------------------------------------------------------------------------------------- invariance form
def chi_square_uniform_pvalue(counts: np.ndarray) -> float:
    return float(stats.chisquare(counts).pvalue)


def identify_elements(g, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """For every image, the element k with apply(x[i], k) == y[i], found by comparing with the whole orbit."""
    orbit = torch.stack([g.apply(x, k) for k in range(g.order)], 1)  # (N, order, C, H, W)
    match = (orbit == y[:, None]).flatten(2).all(-1)  # (N, order)
    assert (match.sum(1) == 1).all(), "every sampled image must be exactly one element of its orbit"
    return match.int().argmax(1).numpy()


@pytest.mark.parametrize(
    "name", ["rotation", "hflip", "inversion", "jigsaw", "blur", "translation", "grayscale", "rotation*hflip"]
)
def test_sample_draws_elements_uniformly(name):
    g = make_group(name)
    x = generic(n=24 * 150, size=8, seed=1)
    y, labels = g.sample(x, generator=torch.Generator().manual_seed(123))
    found = identify_elements(g, x, y)
    assert np.array_equal(found, labels.numpy()), "returned labels must be the elements applied"
    counts = np.bincount(found, minlength=g.order)
    assert chi_square_uniform_pvalue(counts) > 1e-3, counts
    y2, labels2 = g.sample(x, generator=torch.Generator().manual_seed(123))
    assert torch.equal(labels, labels2) and torch.equal(y, y2), "a fixed generator must reproduce the draw"


@pytest.mark.parametrize("name", ["jigsaw", "rotation*hflip"])
def test_repeated_draws_are_independent_elements_of_each_image(name):
    """sample(x, repeats=r): r blocks of N rows, block j row i is some element applied to x[i], drawn uniformly
    and independently across blocks (the sampled form of the prediction objective)."""
    g = make_group(name)
    x = generic(n=24 * 50, size=8, seed=2)
    y, labels = g.sample(x, generator=torch.Generator().manual_seed(7), repeats=3)
    assert y.shape == (3 * x.shape[0], *x.shape[1:]) and labels.shape == (3 * x.shape[0],)
    found = np.concatenate([identify_elements(g, x, block) for block in y.chunk(3)])
    assert np.array_equal(found, labels.numpy())
    assert chi_square_uniform_pvalue(np.bincount(found, minlength=g.order)) > 1e-3
    first, second = labels.chunk(3)[:2]
    assert (first != second).float().mean() > 0.5  # not the same draw repeated


def test_uniformity_check_rejects_a_biased_sampler():
    """The chi-square check above has power: a sampler that favours element 0 by 10% fails it."""
    rng = np.random.default_rng(0)
    biased = rng.choice(4, size=3600, p=[0.325, 0.225, 0.225, 0.225])
    assert chi_square_uniform_pvalue(np.bincount(biased, minlength=4)) < 1e-3
    # and a sampler that never draws the last element (an off-by-one in randint) fails as well
    off_by_one = rng.integers(0, 3, size=3600)
    assert chi_square_uniform_pvalue(np.bincount(off_by_one, minlength=4)) < 1e-3


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_group_names_each_of_its_elements_once(name):
    g = make_group(name)
    if not g.finite:
        return
    names = g.element_names()
    assert len(names) == g.order and len(set(names)) == g.order


def test_element_names_follow_the_group_parameters():
    """Blur labels come from the group's own levels; a product names label a·|B| + b as ``a+b``."""
    from essl.groups.photometric import GaussianBlur4

    assert GaussianBlur4((0.0, 0.5, 1.0, 2.0)).element_names() == ["σ 0", "σ 0.5", "σ 1", "σ 2"]
    assert make_group("blur").element_names() == [f"σ {s:g}" for s in make_group("blur").sigmas]
    product = make_group("rotation*hflip")
    assert product.element_names()[product.encode(2, 1)] == "180°+h-flip"

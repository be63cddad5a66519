"""Table-driven bad-input suite (issue 9): every case runs one ``essl`` command on a bad input and must end with a
clear error. ``python -m tests.bad_inputs`` prints the count of cases by outcome; see :mod:`.harness`."""

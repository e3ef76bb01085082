"""Output spaces: fsaverage4 really is the first 2,562 vertices of each fsaverage5 hemisphere, and
parcel averages match a direct computation with nibabel."""

from __future__ import annotations

import numpy as np
import pytest

from tinytribe.spaces import FSAVERAGE4_PER_HEMI, fsaverage4_indices, parcel_means, parcellation, reduce_space


@pytest.mark.parametrize("hemi", ["left", "right"])
def test_fsaverage4_vertices_are_the_icosahedral_parents(hemi):
    from nilearn.datasets import load_fsaverage
    from scipy.spatial import cKDTree

    mesh = load_fsaverage("fsaverage5")["sphere"].parts[hemi]
    xyz, faces = np.asarray(mesh.coordinates, float), np.asarray(mesh.faces)
    parents, children = xyz[:FSAVERAGE4_PER_HEMI], xyz[FSAVERAGE4_PER_HEMI:]
    assert len(xyz) == 10 * 4**5 + 2 and FSAVERAGE4_PER_HEMI == 10 * 4**4 + 2
    _, pair = cKDTree(parents).query(children, k=2)
    mid = parents[pair].mean(axis=1)
    mid *= (np.linalg.norm(children, axis=1) / np.linalg.norm(mid, axis=1))[:, None]
    # every later vertex is the midpoint of two parents (to 0.02 mm on a 100 mm sphere; edges are ~3.8 mm) ...
    assert np.linalg.norm(mid - children, axis=1).max() < 0.02
    # ... and the fsaverage5 mesh joins it to both
    edges = {tuple(sorted(e)) for f in faces for e in ((f[0], f[1]), (f[1], f[2]), (f[0], f[2]))}
    child_ids = np.arange(FSAVERAGE4_PER_HEMI, len(xyz))
    assert all((min(c, p), max(c, p)) in edges for c, ps in zip(child_ids, pair) for p in ps)


def test_fsaverage4_reduction_selects_both_hemispheres():
    x = np.arange(2 * 20484, dtype=np.float32).reshape(2, 20484)
    y = reduce_space(x, "fsaverage5", "fsaverage4")
    assert y.shape == (2, 5124)
    np.testing.assert_array_equal(y[0, :2562], np.arange(2562))
    np.testing.assert_array_equal(y[0, 2562:], 10242 + np.arange(2562))
    assert fsaverage4_indices().size == 5124


def test_schaefer_means_match_nibabel_directly():
    import nibabel.freesurfer as fs

    from tinytribe.spaces import ATLAS_DIR

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 20484)).astype(np.float32)
    y = reduce_space(x, "fsaverage5", "schaefer-400")
    lh, _, names = fs.read_annot(str(ATLAS_DIR / "lh.schaefer_400.annot"))
    rh, _, _ = fs.read_annot(str(ATLAS_DIR / "rh.schaefer_400.annot"))
    assert y.shape == (3, 400)
    np.testing.assert_allclose(y[:, 0], x[:, :10242][:, lh == 1].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(y[:, 399], x[:, 10242:][:, rh == 200].mean(axis=1), rtol=1e-5)
    labels, parcel_names = parcellation("schaefer-400")
    assert parcel_names[0] == names[1].decode() and parcel_names[200].startswith("7Networks_RH")
    assert (labels == 0).sum() > 1500  # the medial wall belongs to no parcel
    assert reduce_space(x, "fsaverage5", "schaefer-1000").shape == (3, 1000)


def test_bad_reductions_say_why():
    with pytest.raises(ValueError, match="data has 5124 outputs, fsaverage5 has 20484"):
        reduce_space(np.zeros((1, 5124)), "fsaverage5", "fsaverage4")
    with pytest.raises(ValueError, match="no reduction from fsaverage4 to fsaverage5"):
        reduce_space(np.zeros((1, 5124)), "fsaverage4", "fsaverage5")
    with pytest.raises(ValueError, match="data has 10 vertices, the atlas 20484"):
        parcel_means(np.zeros((1, 10)), parcellation("schaefer-400")[0])


def test_upsampling_fsaverage4_keeps_shared_vertices_and_inverts_the_reduction():
    from tinytribe.spaces import upsample_fsaverage4

    rng = np.random.default_rng(0)
    x4 = rng.standard_normal((2, 5124))
    x5 = upsample_fsaverage4(x4)
    assert x5.shape == (2, 20484)
    np.testing.assert_array_equal(reduce_space(x5, "fsaverage5", "fsaverage4"), x4)
    # a child vertex takes one of its two parents' values
    assert np.isin(x5[0, 2562:10242], x4[0, :2562]).all() and np.isin(x5[0, 12804:], x4[0, 2562:]).all()
    with pytest.raises(ValueError, match="fsaverage4 has 5124"):
        upsample_fsaverage4(np.zeros(20484))

"""The benchmark protocols, each checked against a computation that does not share its code.

- GoPro/HIDE: PSNR against scikit-image's on the 8-bit arrays; MATLAB's 3-D SSIM against a reference written here
  with ``scipy.ndimage.gaussian_filter`` on the H×W×3 volume (σ 1.5 in all three axes, radius 5, ``nearest`` =
  MATLAB's replicate padding) and numpy, and against the closed form on constant images.
- RealBlur: a known homography applied to a zoo-blurred photo is recovered by the ECC step, and the masked PSNR
  equals a direct computation with the *true* homography (scikit-image's PSNR over the masked pixels); the masked
  SSIM equals the reference script's own route (scikit-image's full SSIM map, masked, cropped).
- Köhler: a translated, intensity-scaled copy scores as its source, and the best frame is the one it came from.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bdirnet.degrade import degrade
from bdirnet.images import to_tensor, to_uint8
from bdirnet.paired import LAYOUTS
from bdirnet.protocols import (
    DATASET_PROTOCOLS,
    PROTOCOL_METRICS,
    PROTOCOLS,
    align,
    masked_psnr,
    masked_ssim,
    psnr_rgb8,
    score_protocol,
    ssim_matlab,
    ssim_skimage,
)

HEIGHT, WIDTH = 128, 160
HOMOGRAPHY = np.array([[1.01, 0.02, -3.0], [-0.015, 0.99, 2.0], [1e-5, -2e-5, 1.0]])


def photo(name: str, top: int = 0, left: int = 0) -> np.ndarray:
    image = getattr(data, name)()
    centre_top, centre_left = image.shape[0] // 2 - HEIGHT // 2, image.shape[1] // 2 - WIDTH // 2
    return np.ascontiguousarray(image[centre_top + top : centre_top + top + HEIGHT, centre_left + left :][:, :WIDTH])


def blurred(image: np.ndarray, family: str, seed: int = 0) -> np.ndarray:
    return to_uint8(degrade(to_tensor(image), family, seed=seed)[0])[0]


def matlab_ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB ``ssim(uint8 A, uint8 B)`` on H×W×3 arrays, written from its documented definition: a 3-D Gaussian
    filter (``imgaussfilt3``, σ 1.5, 11×11×11, replicate padding) of the volumes, C1 = (0.01·255)², C2 =
    (0.03·255)², the map's mean."""
    x, y = a.astype(np.float64), b.astype(np.float64)

    def gaussian(volume: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(volume, sigma=1.5, truncate=5 / 1.5, mode="nearest")

    mean_x, mean_y = gaussian(x), gaussian(y)
    sxx, syy, sxy = gaussian(x * x) - mean_x**2, gaussian(y * y) - mean_y**2, gaussian(x * y) - mean_x * mean_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = (2 * mean_x * mean_y + c1) * (2 * sxy + c2) / ((mean_x**2 + mean_y**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


class TestGoProHide:
    @pytest.mark.parametrize(("name", "family"), [("astronaut", "motion"), ("coffee", "gaussian"), ("camera", "shake")])
    def test_matlab_ssim_equals_the_volume_reference(self, name: str, family: str) -> None:
        sharp = photo(name)
        sharp = np.stack([sharp] * 3, axis=-1) if sharp.ndim == 2 else sharp
        restored = blurred(sharp, family, seed=1)
        ours = float(ssim_matlab(to_tensor(restored), to_tensor(sharp))[0])
        assert ours == pytest.approx(matlab_ssim_reference(restored, sharp), abs=1e-10)
        # The volume window mixes channels: on colour photos it reads higher than the per-channel SSIM (as mmagic
        # notes for the published tables); on a gray photo in three equal channels the two differ only by padding.
        per_channel = float(ssim_skimage(to_tensor(restored), to_tensor(sharp))[0])
        assert ours - per_channel > (0.01 if name != "camera" else -0.02)

    def test_matlab_ssim_closed_form_on_constant_images(self) -> None:
        """Constant images: every variance is 0, so the map is (2ab + C1) / (a² + b² + C1) everywhere."""
        a, b = np.full((32, 40, 3), 100, np.uint8), np.full((32, 40, 3), 120, np.uint8)
        c1 = (0.01 * 255) ** 2
        expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
        assert float(ssim_matlab(to_tensor(a), to_tensor(b))[0]) == pytest.approx(expected, abs=1e-12)

    def test_psnr_and_skimage_ssim_on_8_bit_images(self) -> None:
        sharp = photo("chelsea")
        restored = blurred(sharp, "defocus")
        assert float(psnr_rgb8(to_tensor(restored), to_tensor(sharp))[0]) == pytest.approx(
            peak_signal_noise_ratio(sharp, restored, data_range=255), abs=1e-9
        )
        reference = structural_similarity(
            sharp, restored, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
            channel_axis=-1,
        )  # fmt: skip
        assert float(ssim_skimage(to_tensor(restored), to_tensor(sharp))[0]) == pytest.approx(reference, abs=1e-4)

    def test_scored_on_the_8_bit_images(self) -> None:
        """A restored image within half a grey level of the sharp one is the same 8-bit image."""
        sharp = to_tensor(photo("rocket"))
        nudged = sharp + torch.where(torch.rand_like(sharp) < 0.5, 0.45, -0.45) / 255.0
        assert float(psnr_rgb8(nudged, sharp)[0]) == float("inf")
        assert float(ssim_matlab(nudged, sharp)[0]) == pytest.approx(1.0, abs=1e-12)


def warp_by_known_homography(image: np.ndarray, scale: float) -> np.ndarray:
    """``scale × image`` seen through :data:`HOMOGRAPHY` (pixel x of the result shows image(H⁻¹ x)), 8-bit."""
    dimmed = (image.astype(np.float64) * scale).round().clip(0, 255).astype(np.uint8)
    return cv2.warpPerspective(
        dimmed, HOMOGRAPHY, (WIDTH, HEIGHT), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def corners_moved_px(warp: np.ndarray, truth: np.ndarray) -> float:
    corners = np.array([[0, 0, 1], [WIDTH - 1, 0, 1], [0, HEIGHT - 1, 1], [WIDTH - 1, HEIGHT - 1, 1]], float).T
    projected = [(m @ corners)[:2] / (m @ corners)[2] for m in (warp.astype(np.float64), truth)]
    return float(np.abs(projected[0] - projected[1]).max())


class TestRealBlur:
    def test_known_homography_recovered_and_masked_psnr_direct(self) -> None:
        sharp = photo("coffee")
        restored = warp_by_known_homography(blurred(sharp, "gaussian", seed=3), scale=0.8)
        x, z = sharp.astype(np.float32) / 255, restored.astype(np.float32) / 255
        alignment = align(z, x)
        assert corners_moved_px(alignment.warp, HOMOGRAPHY) < 0.15
        # Direct: undo the true homography, scale by least squares, PSNR over the pixels the true warp covers.
        inverse_map = cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP
        undone = cv2.warpPerspective(z, HOMOGRAPHY, (WIDTH, HEIGHT), flags=inverse_map, borderMode=cv2.BORDER_REFLECT)
        scaled = undone * (x * undone).sum() / (undone * undone).sum()
        ones = np.ones((HEIGHT, WIDTH), np.float32)
        covered = cv2.warpPerspective(ones, HOMOGRAPHY, (WIDTH, HEIGHT), flags=cv2.WARP_INVERSE_MAP) > 0.5
        direct = peak_signal_noise_ratio(x[covered], scaled[covered], data_range=1.0)
        protocol = float(PROTOCOL_METRICS["realblur_psnr"](to_tensor(restored), to_tensor(sharp))[0])
        assert protocol == pytest.approx(direct, abs=0.15)
        assert 30 < protocol < 40  # the blur is scored, not aligned away
        assert abs(alignment.mask[..., 0].mean() - covered.mean()) < 0.002

    def test_dimmed_warped_copy_scores_as_the_photo(self) -> None:
        sharp = photo("astronaut")
        restored = warp_by_known_homography(sharp, scale=0.8)
        scores = score_protocol("realblur", to_tensor(restored), to_tensor(sharp))
        assert scores["realblur_psnr"] > 35 and scores["realblur_ssim"] > 0.98

    def test_masked_ssim_follows_the_reference_route(self) -> None:
        """evaluation_RealBlur_ecc.py: scikit-image's full SSIM map × mask, cropped by the window radius, summed
        per channel over the cropped mask, mean over channels (here in float64)."""
        sharp = photo("chelsea")
        restored = warp_by_known_homography(blurred(sharp, "motion", seed=2), scale=1.1)
        alignment = align(restored.astype(np.float32) / 255, sharp.astype(np.float32) / 255)
        _, full = structural_similarity(
            alignment.reference.astype(np.float64), alignment.aligned.astype(np.float64), channel_axis=-1,
            gaussian_weights=True, use_sample_covariance=False, data_range=1.0, full=True,
        )  # fmt: skip
        mask = alignment.mask.astype(np.float64)
        expected = np.mean((full * mask)[5:-5, 5:-5].sum(axis=(0, 1)) / mask[5:-5, 5:-5].sum(axis=(0, 1)))
        assert masked_ssim(alignment) == pytest.approx(expected, abs=1e-9)
        assert 0.3 < masked_ssim(alignment) < 0.95
        error = np.sum((alignment.reference.astype(np.float64) - alignment.aligned) ** 2) / mask.sum()
        assert masked_psnr(alignment) == pytest.approx(-10 * np.log10(error), abs=1e-9)

    def test_alignment_is_the_reference_scripts(self) -> None:
        """The published call, step by step as evaluation_RealBlur_ecc.py makes it (scale, gray ECC homography with
        100 iterations, eps 0, Gaussian filter size 5; bicubic inverse warp, reflected border; nearest mask), gives
        the same warp and images as :func:`align`."""
        sharp = photo("rocket")
        restored = warp_by_known_homography(blurred(sharp, "defocus", seed=4), scale=0.9)
        x, z = sharp.astype(np.float32) / 255, restored.astype(np.float32) / 255
        zs = (np.sum(x * z) / np.sum(z * z)) * z
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 0)
        gray = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (x, zs)]
        _, warp = cv2.findTransformECC(*gray, np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
        size = (WIDTH, HEIGHT)
        zr = cv2.warpPerspective(
            zs, warp, size, flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
        )
        cr = cv2.warpPerspective(np.ones_like(zs), warp, size, flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP)
        alignment = align(z, x)
        assert np.allclose(alignment.warp, warp, rtol=0, atol=1e-5)
        assert np.allclose(alignment.aligned, zr * cr, atol=1e-5) and np.array_equal(alignment.mask, cr)

    def test_unrelated_image_is_one_line(self) -> None:
        flat = np.full((HEIGHT, WIDTH, 3), 0.5, np.float32)
        with pytest.raises(ValueError, match=r"^ECC alignment failed \(.*\)$") as error:
            align(flat, photo("coffee").astype(np.float32) / 255)
        assert "\n" not in str(error.value)


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


class TestKohler:
    def test_translated_scaled_copy_scores_as_its_source(self) -> None:
        """Sharp frames along a shake (here: the photo turned by 0°, 3°, 6°, which a translation cannot undo); the
        restored image is frame 1 blurred by the zoo; its translated, dimmed copy scores as it does, and the best
        frame is frame 1."""
        wide = data.astronaut()[100:400, 100:420]
        frames_wide = [rotated(wide, angle) for angle in (0.0, 3.0, 6.0)]
        frames = [np.ascontiguousarray(f[40 : 40 + HEIGHT, 40 : 40 + WIDTH]) for f in frames_wide]
        blurred_wide = blurred(frames_wide[1], "gaussian", seed=5)
        source = np.ascontiguousarray(blurred_wide[40 : 40 + HEIGHT, 40 : 40 + WIDTH])
        moved = (blurred_wide[43 : 43 + HEIGHT, 38 : 38 + WIDTH].astype(np.float64) * 0.7).round().astype(np.uint8)
        stack = torch.cat([to_tensor(f) for f in frames])[None]  # (1, F, 3, H, W)
        of_source = score_protocol("kohler", to_tensor(source), stack)
        of_moved = score_protocol("kohler", to_tensor(moved), stack)
        assert of_moved["kohler_psnr"] == pytest.approx(of_source["kohler_psnr"], abs=0.1)
        assert of_moved["kohler_ssim"] == pytest.approx(of_source["kohler_ssim"], abs=0.005)
        per_frame = [score_protocol("kohler", to_tensor(moved), stack[:, f : f + 1])["kohler_psnr"] for f in range(3)]
        assert of_moved["kohler_psnr"] == max(per_frame) == per_frame[1]
        assert per_frame[1] > max(per_frame[0], per_frame[2]) + 1.0
        direct = peak_signal_noise_ratio(frames[1], source, data_range=255)
        assert of_source["kohler_psnr"] == pytest.approx(direct, abs=0.3)


def test_every_protocol_metric_is_per_image() -> None:
    sharp = torch.cat([to_tensor(photo("coffee")), to_tensor(photo("chelsea"))])
    restored = torch.cat(
        [to_tensor(blurred(photo("coffee"), "gaussian")), to_tensor(blurred(photo("chelsea"), "motion"))]
    )
    for name, metric in PROTOCOL_METRICS.items():
        values = metric(restored, sharp)
        assert values.shape == (2,) and values.dtype == torch.float64, name
        assert float(metric(restored[1:], sharp[1:])[0]) == pytest.approx(float(values[1]), abs=1e-9), name
    assert set(DATASET_PROTOCOLS.values()) == set(PROTOCOLS)
    assert {d.split("_")[0] for d in DATASET_PROTOCOLS} == set(LAYOUTS) - {"generic"}
    assert {n for names, _ in PROTOCOLS.values() for n in names} == set(PROTOCOL_METRICS)

//! Training-time augmentation, mirroring a recipe's `augment` list. Every random choice for an
//! image comes from its own ChaCha stream seeded by (seed, epoch, dataset index), so a batch is
//! identical whatever order the worker threads happen to process it in.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::transform::{self, Image};

/// AlexNet's PCA lighting eigenvalues of ImageNet RGB (0-1 scale), as in fb.resnet.torch.
pub const LIGHTING_EIGVAL: [f32; 3] = [0.2175, 0.0188, 0.0045];
/// The matching eigenvectors, one per column.
pub const LIGHTING_EIGVEC: [[f32; 3]; 3] = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
];

/// Which augmentations to apply: the card's recipe type itself (`zoo_card::Augment`), so the
/// card flows into the loader without a copy; `Augment::default()` applies none (evaluation).
pub use zoo_card::Augment;

/// The standard ImageNet training recipe: random-resized crop (0.08) + flip.
pub fn imagenet() -> Augment {
    Augment {
        random_resized_crop: Some(0.08),
        hflip: true,
        ..Augment::default()
    }
}

/// The standard CIFAR recipe: pad 4 and crop + flip.
pub fn cifar() -> Augment {
    Augment {
        pad_crop: Some(4),
        hflip: true,
        ..Augment::default()
    }
}

/// Whether nothing random happens.
pub fn is_identity(aug: &Augment) -> bool {
    *aug == Augment::default()
}

/// Checks the settings are in range (cards are validated already; this guards API callers).
pub fn validate(aug: &Augment) -> Result<()> {
    if let Some(s) = aug.random_resized_crop {
        if !(s > 0.0 && s <= 1.0) {
            return Err(Error::Config(format!(
                "random_resized_crop: minimum scale {s} must be in (0, 1]"
            )));
        }
    }
    if let Some(l) = aug.lighting {
        if !(l.is_finite() && l >= 0.0) {
            return Err(Error::Config(format!("lighting: std {l} must be >= 0")));
        }
    }
    Ok(())
}

/// Domain tags keep the shuffle stream and the per-image streams apart.
const DOMAIN_ITEM: u64 = 0x6974_656d; // "item"
const DOMAIN_SHUFFLE: u64 = 0x7368_7566; // "shuf"

/// The random stream for one image of one epoch.
pub fn item_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    rng_for(seed, epoch, index, DOMAIN_ITEM)
}

/// The random stream that shuffles one epoch.
pub fn shuffle_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    rng_for(seed, epoch, 0, DOMAIN_SHUFFLE)
}

fn rng_for(seed: u64, epoch: u64, index: u64, domain: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..32].copy_from_slice(&domain.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Zero-pads by `pad` on every side and crops back to the original size at a random offset.
pub fn pad_crop(img: &Image, pad: usize, rng: &mut impl Rng) -> Image {
    let top = rng.random_range(0..=2 * pad);
    let left = rng.random_range(0..=2 * pad);
    pad_crop_at(img, pad, top, left)
}

/// [`pad_crop`] with a given offset into the padded image (`0..=2*pad` each).
pub fn pad_crop_at(img: &Image, pad: usize, top: usize, left: usize) -> Image {
    let (h, w) = (img.height, img.width);
    let mut out = Image::zeros(h, w);
    for c in 0..3 {
        for y in 0..h {
            // Row y of the output is row (y + top - pad) of the source; outside is padding.
            let sy = y + top;
            if sy < pad || sy - pad >= h {
                continue;
            }
            let sy = sy - pad;
            for x in 0..w {
                let sx = x + left;
                if sx < pad || sx - pad >= w {
                    continue;
                }
                out.data[c * h * w + y * w + x] = img.data[c * h * w + sy * w + (sx - pad)];
            }
        }
    }
    out
}

/// Mirrors the image left-right.
pub fn hflip(img: &Image) -> Image {
    let mut out = img.clone();
    for row in out.data.chunks_exact_mut(img.width.max(1)) {
        row.reverse();
    }
    out
}

/// torchvision's `RandomResizedCrop.get_params`: returns (top, left, height, width).
pub fn random_resized_crop_box(
    height: usize,
    width: usize,
    min_scale: f64,
    rng: &mut impl Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(min_scale..=1.0);
        let ratio = rng.random_range(lo..=hi).exp();
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    // Fallback: the largest centred crop whose aspect ratio is within bounds.
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < 0.75 {
        (((width as f64) / 0.75).round() as usize, width)
    } else if in_ratio > 4.0 / 3.0 {
        (height, ((height as f64) * 4.0 / 3.0).round() as usize)
    } else {
        (height, width)
    };
    let (h, w) = (h.clamp(1, height), w.clamp(1, width));
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// AlexNet PCA lighting: the RGB shift (0-1 scale) `eigvec * (alpha .* eigval)` with
/// `alpha ~ N(0, std)`.
pub fn lighting_shift(std: f64, rng: &mut impl Rng) -> [f32; 3] {
    let alpha = [normal(rng) * std, normal(rng) * std, normal(rng) * std];
    let mut shift = [0f32; 3];
    for (i, s) in shift.iter_mut().enumerate() {
        for j in 0..3 {
            *s += LIGHTING_EIGVEC[i][j] * (alpha[j] as f32) * LIGHTING_EIGVAL[j];
        }
    }
    shift
}

/// A standard normal sample (Box-Muller), to avoid a dependency for one distribution.
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Applies the geometric augmentations and returns the image at `size` x `size` plus the
/// lighting shift to add before normalisation. Images not already at `size` without a
/// random-resized crop get the evaluation resize + centre crop first.
pub fn apply(aug: &Augment, img: &Image, size: usize, rng: &mut impl Rng) -> (Image, [f32; 3]) {
    let mut img = match aug.random_resized_crop {
        Some(min) => {
            let (t, l, h, w) = random_resized_crop_box(img.height, img.width, min, rng);
            transform::resize(&img.crop(t, l, h, w), size, size)
        }
        None if img.height == size && img.width == size => img.clone(),
        None => transform::eval_resize_crop(img, size),
    };
    if let Some(p) = aug.pad_crop {
        img = pad_crop(&img, p, rng);
    }
    if aug.hflip && rng.random_bool(0.5) {
        img = hflip(&img);
    }
    let shift = match aug.lighting {
        Some(std) if std > 0.0 => lighting_shift(std, rng),
        _ => [0.0; 3],
    };
    (img, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2x3 image whose value encodes (channel, row, column).
    fn tiny() -> Image {
        let mut img = Image::zeros(2, 3);
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..3 {
                    img.data[c * 6 + y * 3 + x] = (100 * c + 10 * y + x + 1) as u8;
                }
            }
        }
        img
    }

    #[test]
    fn hflip_reverses_rows() {
        let f = hflip(&tiny());
        assert_eq!(&f.data[0..6], &[3, 2, 1, 13, 12, 11]);
        assert_eq!(&f.data[12..18], &[203, 202, 201, 213, 212, 211]);
    }

    #[test]
    fn pad_crop_shifts_and_zero_fills() {
        let img = tiny();
        // Offset (pad, pad) is the identity.
        assert_eq!(pad_crop_at(&img, 1, 1, 1), img);
        // Offset (0, 0): the content moves down-right by one, zeros enter top and left.
        let s = pad_crop_at(&img, 1, 0, 0);
        assert_eq!(&s.data[0..6], &[0, 0, 0, 0, 1, 2]);
        // Offset (2, 2): the content moves up-left by one.
        let s = pad_crop_at(&img, 1, 2, 2);
        assert_eq!(&s.data[6..12], &[112, 113, 0, 0, 0, 0]);
    }

    #[test]
    fn rrc_box_is_inside_and_in_range() {
        let mut rng = item_rng(1, 2, 3);
        for _ in 0..200 {
            let (t, l, h, w) = random_resized_crop_box(50, 80, 0.08, &mut rng);
            assert!(t + h <= 50 && l + w <= 80 && h > 0 && w > 0);
            let frac = (h * w) as f64 / 4000.0;
            assert!(frac <= 1.0 && frac > 0.05, "{frac}");
        }
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: u64 = item_rng(7, 1, 5).random();
        assert_eq!(a, item_rng(7, 1, 5).random::<u64>());
        assert_ne!(a, item_rng(7, 2, 5).random::<u64>());
        assert_ne!(a, item_rng(7, 1, 6).random::<u64>());
        assert_ne!(a, item_rng(8, 1, 5).random::<u64>());
    }

    #[test]
    fn lighting_is_small_and_zero_mean() {
        let mut rng = item_rng(0, 0, 0);
        let mut sum = [0f64; 3];
        for _ in 0..2000 {
            let s = lighting_shift(0.1, &mut rng);
            for c in 0..3 {
                assert!(s[c].abs() < 0.2);
                sum[c] += s[c] as f64;
            }
        }
        assert!(sum.iter().all(|s| (s / 2000.0).abs() < 0.005), "{sum:?}");
    }

    #[test]
    fn validate_rejects_bad_scale() {
        let a = Augment {
            random_resized_crop: Some(0.0),
            ..Augment::default()
        };
        assert!(validate(&a).is_err());
        assert!(validate(&imagenet()).is_ok());
    }
}

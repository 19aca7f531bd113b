//! Deterministic image transforms: the u8 CHW image type, torchvision-style resize and centre
//! crop, and conversion to normalised floats.
//!
//! Resizing uses `image::imageops::resize` with `FilterType::Triangle`. Like PIL's `BILINEAR`
//! (what torchvision's `Resize` calls on PIL images) it widens the triangle's support by the scale
//! factor when downscaling, so it antialiases instead of skipping pixels. Known differences from
//! PIL: PIL accumulates in fixed point and `image` in f32, so pixels can differ by one level, and
//! torchvision on *tensors* without `antialias=True` does not antialias at all.

use image::imageops::{self, FilterType};
use image::RgbImage;

/// An RGB image as u8 in CHW order (the layout the model consumes, and the cache stores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `3 * height * width` bytes: all red, then all green, then all blue.
    pub data: Vec<u8>,
}

impl Image {
    /// A black image.
    pub fn zeros(height: usize, width: usize) -> Self {
        Image {
            height,
            width,
            data: vec![0; 3 * height * width],
        }
    }

    /// Converts from the `image` crate's interleaved (HWC) RGB.
    pub fn from_rgb(img: &RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0u8; 3 * h * w];
        hwc_to_chw(img.as_raw(), h, w, &mut data);
        Image {
            height: h,
            width: w,
            data,
        }
    }

    /// Converts to the `image` crate's interleaved (HWC) RGB.
    pub fn to_rgb(&self) -> RgbImage {
        let plane = self.height * self.width;
        let mut raw = vec![0u8; 3 * plane];
        for (i, px) in raw.chunks_exact_mut(3).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = self.data[c * plane + i];
            }
        }
        // The buffer length is 3*w*h by construction, so `from_raw` cannot fail; fall back to a
        // blank image rather than panic should that ever change.
        RgbImage::from_raw(self.width as u32, self.height as u32, raw)
            .unwrap_or_else(|| RgbImage::new(self.width as u32, self.height as u32))
    }

    /// The sub-image at row `top`, column `left` of size `h` x `w` (must lie inside).
    pub fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Image {
        let mut out = Image::zeros(h, w);
        for c in 0..3 {
            for y in 0..h {
                let src = c * self.height * self.width + (top + y) * self.width + left;
                let dst = c * h * w + y * w;
                out.data[dst..dst + w].copy_from_slice(&self.data[src..src + w]);
            }
        }
        out
    }
}

/// Writes interleaved HWC RGB `src` into planar CHW `dst` (both `3*h*w` long).
pub(crate) fn hwc_to_chw(src: &[u8], h: usize, w: usize, dst: &mut [u8]) {
    let plane = h * w;
    for (i, px) in src.chunks_exact(3).enumerate().take(plane) {
        dst[i] = px[0];
        dst[plane + i] = px[1];
        dst[2 * plane + i] = px[2];
    }
}

/// Resizes to exactly `h` x `w` with the PIL-like antialiased bilinear filter.
pub fn resize(img: &Image, h: usize, w: usize) -> Image {
    if img.height == h && img.width == w {
        return img.clone();
    }
    let out = imageops::resize(&img.to_rgb(), w as u32, h as u32, FilterType::Triangle);
    Image::from_rgb(&out)
}

/// Resizes so the shorter side is `size`, keeping the aspect ratio as torchvision does (the
/// longer side is `floor(size * long / short)`).
pub fn resize_shorter(img: &Image, size: usize) -> Image {
    let (h, w) = (img.height, img.width);
    let (short, long) = if h <= w { (h, w) } else { (w, h) };
    let new_long = (size as u64 * long as u64 / short.max(1) as u64) as usize;
    if h <= w {
        resize(img, size, new_long)
    } else {
        resize(img, new_long, size)
    }
}

/// The centred `size` x `size` crop; offsets round half to even like torchvision's Python
/// `round`. Images smaller than `size` are zero-padded (centred) as torchvision does.
pub fn center_crop(img: &Image, size: usize) -> Image {
    if img.height < size || img.width < size {
        let padded = pad(
            img,
            size.saturating_sub(img.height),
            size.saturating_sub(img.width),
        );
        return center_crop(&padded, size);
    }
    let top = ((img.height - size) as f64 / 2.0).round_ties_even() as usize;
    let left = ((img.width - size) as f64 / 2.0).round_ties_even() as usize;
    img.crop(top, left, size, size)
}

/// Zero-pads by `dh` rows and `dw` columns in total, split as evenly as possible (extra on the
/// bottom/right).
fn pad(img: &Image, dh: usize, dw: usize) -> Image {
    let (top, left) = (dh / 2, dw / 2);
    let mut out = Image::zeros(img.height + dh, img.width + dw);
    for c in 0..3 {
        for y in 0..img.height {
            let src = c * img.height * img.width + y * img.width;
            let dst = c * out.height * out.width + (y + top) * out.width + left;
            out.data[dst..dst + img.width].copy_from_slice(&img.data[src..src + img.width]);
        }
    }
    out
}

/// torchvision's evaluation transform: resize the shorter side to `size * 256 / 224` (256 for
/// 224), then centre-crop `size`.
pub fn eval_resize_crop(img: &Image, size: usize) -> Image {
    let resize_to = (size as f64 * 256.0 / 224.0).round() as usize;
    center_crop(&resize_shorter(img, resize_to), size)
}

/// The model input for one photo at evaluation, as torchvision's ImageNet transform makes it:
/// [`eval_resize_crop`] (always, even for a photo already `size` x `size`), then `norm`; f32
/// CHW, `3 * size * size` values.
pub fn eval_input(img: &Image, size: usize, norm: &Normalize) -> Vec<f32> {
    let img = eval_resize_crop(img, size);
    let mut out = vec![0f32; 3 * size * size];
    norm.apply(&img, [0.0; 3], &mut out);
    out
}

/// Per-channel normalisation: `(x / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Channel means on the 0-1 scale.
    pub mean: [f32; 3],
    /// Channel standard deviations on the 0-1 scale.
    pub std: [f32; 3],
}

impl Normalize {
    /// Writes `img` as normalised f32 CHW into `out` (length `3*h*w`), adding `shift[c]` (on the
    /// 0-1 scale, e.g. PCA lighting noise) to every pixel of channel `c` before normalising.
    pub fn apply(&self, img: &Image, shift: [f32; 3], out: &mut [f32]) {
        let plane = img.height * img.width;
        for c in 0..3 {
            let scale = 1.0 / (255.0 * self.std[c]);
            let offset = (shift[c] - self.mean[c]) / self.std[c];
            let src = &img.data[c * plane..(c + 1) * plane];
            for (o, &v) in out[c * plane..(c + 1) * plane].iter_mut().zip(src) {
                *o = v as f32 * scale + offset;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Image {
        let mut img = Image::zeros(h, w);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = (i % 251) as u8;
        }
        img
    }

    #[test]
    fn rgb_round_trip() {
        let img = ramp(3, 5);
        assert_eq!(Image::from_rgb(&img.to_rgb()), img);
    }

    #[test]
    fn resize_shorter_keeps_aspect_like_torchvision() {
        let r = resize_shorter(&ramp(300, 400), 256);
        assert_eq!((r.height, r.width), (256, 341)); // floor(256 * 400 / 300) = 341
        let r = resize_shorter(&ramp(500, 375), 256);
        assert_eq!((r.height, r.width), (341, 256));
    }

    #[test]
    fn center_crop_rounds_half_to_even() {
        // 341 - 224 = 117 -> offset round(58.5) = 58 (Python rounds half to even).
        let img = ramp(224, 341);
        let c = center_crop(&img, 224);
        assert_eq!(c, img.crop(0, 58, 224, 224));
        let e = eval_resize_crop(&ramp(300, 400), 224);
        assert_eq!((e.height, e.width), (224, 224));
    }

    #[test]
    fn downscale_antialiases() {
        // A 1-pixel checkerboard averaged down 4x must come out mid-grey, not black or white
        // (a sampling resize without antialiasing would keep picking one colour).
        let mut img = Image::zeros(64, 64);
        for c in 0..3 {
            for y in 0..64 {
                for x in 0..64 {
                    img.data[c * 4096 + y * 64 + x] = if (x + y) % 2 == 0 { 255 } else { 0 };
                }
            }
        }
        let r = resize(&img, 16, 16);
        for v in &r.data {
            assert!((100..=155).contains(v), "{v}");
        }
    }

    #[test]
    fn normalisation_values() {
        let mut img = Image::zeros(1, 2);
        img.data = vec![0, 255, 128, 128, 51, 51];
        let n = Normalize {
            mean: [0.5, 0.25, 0.2],
            std: [0.5, 0.25, 0.1],
        };
        let mut out = vec![0.0; 6];
        n.apply(&img, [0.0; 3], &mut out);
        let want = [
            -1.0,
            1.0,
            (128.0 / 255.0 - 0.25) / 0.25,
            (128.0 / 255.0 - 0.25) / 0.25,
            0.0,
            0.0,
        ];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
        n.apply(&img, [0.1, 0.0, 0.0], &mut out);
        assert!((out[0] - (0.1 - 0.5) / 0.5).abs() < 1e-5);
    }
}

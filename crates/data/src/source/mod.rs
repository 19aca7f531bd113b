//! Readers for the places a dataset can come from.

use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::transform::hwc_to_chw;

pub mod cifar_bin;
pub mod folder;
pub mod hub;
pub mod parquet_images;

/// Decodes images `0..n` in parallel into one CHW buffer (`n * 3 * height * width` bytes). All
/// must be `height` x `width`; `origin(i)` names image `i` in that error (a file, and a prefix
/// such as `row 7: ` for images stored inside one).
pub(crate) fn decode_parallel(
    n: usize,
    (height, width): (usize, usize),
    decode: impl Fn(usize) -> Result<image::RgbImage> + Sync,
    origin: impl Fn(usize) -> (PathBuf, String) + Sync,
) -> Result<Vec<u8>> {
    let per = 3 * height * width;
    let mut pixels = vec![0u8; n * per];
    pixels
        .par_chunks_mut(per)
        .enumerate()
        .try_for_each(|(i, dst)| -> Result<()> {
            let img = decode(i)?;
            let (w, h) = (img.width() as usize, img.height() as usize);
            if (h, w) != (height, width) {
                let (path, prefix) = origin(i);
                return Err(Error::Image {
                    path,
                    message: format!(
                        "{prefix}image is {w}x{h}, but this split's images are {width}x{height}; \
                         resize it or remove it"
                    ),
                });
            }
            hwc_to_chw(img.as_raw(), h, w, dst);
            Ok(())
        })?;
    Ok(pixels)
}

//! Parquet files of encoded images and integer labels, as the Hugging Face `datasets` library
//! writes them (`push_to_hub`): an image column that is a struct `{bytes, path}` (its `Image`
//! feature) or plain binary, and an integer label column. Only those two columns are read.
//!
//! Images are decoded in parallel into the same CHW [`ImageSet`] the other sources produce.
//! `image` decodes rows top to bottom (HWC, rows = y), which is kept as is: candle-datasets 0.11's
//! hub CIFAR loader permutes that buffer as if it were (W, H, C), so its images come out
//! transposed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Type as Physical;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::Type;

use crate::cache::ImageSet;
use crate::error::{Error, Result};

/// The columns to read.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// Encoded images: binary, or a struct with a binary `bytes` field.
    pub image: &'a str,
    /// Integer labels, indices into the card's classes.
    pub label: &'a str,
}

fn problem(path: &Path, message: String) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        message,
    }
}

/// Opens a parquet file and reads its footer (schema, row groups).
pub fn open(path: &Path) -> Result<SerializedFileReader<File>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    // parquet names the codec in its error ("Disabled feature at compile time: zstd").
    SerializedFileReader::new(f).map_err(|e| problem(path, format!("unreadable parquet: {e}")))
}

/// Reads every row: decodes the images (each must be `size` x `size`) and checks the labels
/// against `num_classes`.
pub fn read(path: &Path, columns: Columns, num_classes: usize, size: usize) -> Result<ImageSet> {
    let reader = open(path)?;
    let projection = projection(path, reader.metadata().file_metadata().schema(), columns)?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| problem(path, format!("cannot read rows: {e}")))?;
    let mut encoded: Vec<ByteArray> = Vec::new();
    let mut labels: Vec<u32> = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| problem(path, format!("row {i}: {e}")))?;
        let (bytes, label) = image_and_label(&row, columns)
            .map_err(|why| problem(path, format!("row {i}: {why}")))?;
        if label >= num_classes as u64 {
            return Err(problem(
                path,
                format!("row {i}: label {label}, but the card has {num_classes} classes"),
            ));
        }
        encoded.push(bytes);
        labels.push(label as u32);
    }
    if encoded.is_empty() {
        return Err(problem(path, "no rows".into()));
    }
    let origin = |i: usize| (path.to_path_buf(), format!("row {i}: "));
    let pixels = super::decode_parallel(
        encoded.len(),
        (size, size),
        |i| {
            image::load_from_memory(encoded[i].data())
                .map(|img| img.into_rgb8())
                .map_err(|e| Error::Image {
                    path: PathBuf::from(path),
                    message: format!("row {i}: cannot decode image: {e}"),
                })
        },
        origin,
    )?;
    Ok(ImageSet {
        height: size,
        width: size,
        pixels,
        labels,
    })
}

/// The file's schema cut down to the two columns (and of a struct image, its `bytes` only), so
/// no other column is decompressed.
fn projection(path: &Path, schema: &Type, columns: Columns) -> Result<Type> {
    let fields = schema.get_fields();
    let find = |name: &str| {
        fields.iter().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
            problem(
                path,
                format!(
                    "no column `{name}` (it has: {}); set `image_column` / `label_column` in \
                     the card's hub source",
                    names.join(", ")
                ),
            )
        })
    };
    let image = find(columns.image)?;
    let label = find(columns.label)?;
    let image = if image.is_group() {
        let bytes = image
            .get_fields()
            .iter()
            .find(|f| f.name() == "bytes" && f.is_primitive())
            .ok_or_else(|| {
                problem(
                    path,
                    format!(
                        "column `{}` is a struct without a `bytes` field",
                        columns.image
                    ),
                )
            })?;
        let cut = Type::group_type_builder(image.name())
            .with_repetition(image.get_basic_info().repetition())
            .with_fields(vec![bytes.clone()])
            .build()
            .map_err(|e| problem(path, e.to_string()))?;
        Arc::new(cut)
    } else if image.get_physical_type() == Physical::BYTE_ARRAY {
        image.clone()
    } else {
        return Err(problem(
            path,
            format!("column `{}` holds no encoded images", columns.image),
        ));
    };
    if !label.is_primitive() {
        return Err(problem(
            path,
            format!("column `{}` holds no integer labels", columns.label),
        ));
    }
    Type::group_type_builder(schema.name())
        .with_fields(vec![image, label.clone()])
        .build()
        .map_err(|e| problem(path, e.to_string()))
}

/// The encoded image and the label of one projected row.
fn image_and_label(row: &Row, columns: Columns) -> std::result::Result<(ByteArray, u64), String> {
    let (mut image, mut label) = (None, None);
    for (name, field) in row.get_column_iter() {
        if name == columns.image {
            image = Some(match field {
                Field::Bytes(b) => b.clone(),
                Field::Group(g) => match g.get_column_iter().next() {
                    Some((_, Field::Bytes(b))) => b.clone(),
                    _ => return Err(format!("`{}.bytes` is empty", columns.image)),
                },
                _ => return Err(format!("`{}` is empty", columns.image)),
            });
        } else if name == columns.label {
            label = Some(match *field {
                Field::Byte(v) => u64::try_from(v).ok(),
                Field::Short(v) => u64::try_from(v).ok(),
                Field::Int(v) => u64::try_from(v).ok(),
                Field::Long(v) => u64::try_from(v).ok(),
                Field::UByte(v) => Some(u64::from(v)),
                Field::UShort(v) => Some(u64::from(v)),
                Field::UInt(v) => Some(u64::from(v)),
                Field::ULong(v) => Some(v),
                ref other => return Err(format!("label {other} is not a class index")),
            });
        }
    }
    match (image, label) {
        (Some(image), Some(Some(label))) => Ok((image, label)),
        (_, Some(None)) => Err("a negative label is not a class index".into()),
        _ => Err("missing image or label".into()),
    }
}

//! Batches on a Candle device, prepared ahead on a background thread so the model does not wait
//! for decoding and augmentation. One producer thread per epoch fills a bounded channel (depth
//! `prefetch`); inside a batch, images are prepared in parallel with rayon. Every random choice is
//! a function of (seed, epoch, index), so the batches do not depend on thread scheduling.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::augment::{shuffle_rng, Augment};
use crate::dataset::Dataset;
use crate::error::{Error, Result};

/// How a [`Loader`] batches a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    /// Images per batch.
    pub batch_size: usize,
    /// Visit the images in a new random order every epoch.
    pub shuffle: bool,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Augmentation (none for evaluation).
    pub augment: Augment,
    /// Seed for shuffling and augmentation.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (the channel depth).
    pub prefetch: usize,
    /// Use only this many images, evenly spread over the dataset (`--limit`, for quick runs):
    /// image `i * len / limit` for `i < limit`, so a class-ordered folder keeps every class.
    pub limit: Option<usize>,
}

impl LoaderOptions {
    /// Training defaults: shuffle, drop the ragged last batch, the given augmentation.
    pub fn train(batch_size: usize, augment: Augment, seed: u64) -> Self {
        LoaderOptions {
            batch_size,
            shuffle: true,
            drop_last: true,
            augment,
            seed,
            prefetch: 3,
            limit: None,
        }
    }

    /// Evaluation: every image once, in order, no augmentation.
    pub fn eval(batch_size: usize) -> Self {
        LoaderOptions {
            batch_size,
            shuffle: false,
            drop_last: false,
            augment: Augment::default(),
            seed: 0,
            prefetch: 3,
            limit: None,
        }
    }
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// f32 `(B, 3, H, W)`, normalised with the dataset card's mean and std.
    pub images: Tensor,
    /// u32 `(B)` class indices.
    pub labels: Tensor,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
}

/// Turns a [`Dataset`] into batches of tensors.
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Arc<Dataset>,
    opts: LoaderOptions,
    device: Device,
}

impl Loader {
    /// A loader over `dataset` producing tensors on `device`.
    pub fn new(
        dataset: impl Into<Arc<Dataset>>,
        opts: LoaderOptions,
        device: Device,
    ) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        crate::augment::validate(&opts.augment)?;
        Ok(Loader {
            dataset: dataset.into(),
            opts,
            device,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.opts
    }

    /// The images an epoch visits, before shuffling.
    fn images(&self) -> Vec<usize> {
        let n = self.dataset.len();
        match self.opts.limit {
            Some(limit) if limit < n => (0..limit).map(|i| i * n / limit).collect(),
            _ => (0..n).collect(),
        }
    }

    /// Images per epoch (all, or `limit`).
    pub fn images_per_epoch(&self) -> usize {
        self.opts
            .limit
            .map_or(self.dataset.len(), |l| l.min(self.dataset.len()))
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let (n, b) = (self.images_per_epoch(), self.opts.batch_size);
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The order in which `epoch` visits the dataset.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.images();
        if self.opts.shuffle {
            order.shuffle(&mut shuffle_rng(self.opts.seed, epoch));
        }
        order
    }

    /// The batches of `epoch`, prepared in the background. Dropping the iterator early stops the
    /// producer.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let mut order = self.order(epoch);
        order.truncate(self.len() * self.opts.batch_size);
        let (tx, rx) = sync_channel(self.opts.prefetch.max(1));
        let (ds, opts, device) = (self.dataset.clone(), self.opts.clone(), self.device.clone());
        let handle = std::thread::spawn(move || {
            for indices in order.chunks(opts.batch_size) {
                let batch = make_batch(&ds, &opts, &device, epoch, indices);
                let failed = batch.is_err();
                // A send error means the consumer is gone: stop quietly.
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Epoch {
            rx: Some(rx),
            handle: Some(handle),
            remaining: self.len(),
        }
    }
}

fn make_batch(
    ds: &Dataset,
    opts: &LoaderOptions,
    device: &Device,
    epoch: u64,
    indices: &[usize],
) -> Result<Batch> {
    let s = ds.image_size();
    let per = 3 * s * s;
    let mut data = vec![0f32; indices.len() * per];
    let labels: Vec<u32> = data
        .par_chunks_mut(per)
        .zip(indices.par_iter())
        .map(|(out, &i)| ds.sample(i, &opts.augment, opts.seed, epoch, out))
        .collect::<Result<_>>()?;
    let b = indices.len();
    Ok(Batch {
        images: Tensor::from_vec(data, (b, 3, s, s), device)?,
        labels: Tensor::from_vec(labels, b, device)?,
        indices: indices.to_vec(),
    })
}

/// The batches of one epoch (see [`Loader::epoch`]).
#[derive(Debug)]
pub struct Epoch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(item) => {
                self.remaining = self.remaining.saturating_sub(1);
                if item.is_err() {
                    self.rx = None; // the producer stopped after an error
                }
                Some(item)
            }
            Err(_) => {
                self.rx = None;
                // The producer hung up: finished normally, or panicked.
                match self.handle.take().map(|h| h.join()) {
                    Some(Err(_)) => Some(Err(Error::Worker("producer thread panicked".into()))),
                    _ => None,
                }
            }
        }
    }

    /// Exact unless a batch fails: the epoch then ends early, after yielding the error (which
    /// consumers such as the trainer treat as fatal).
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Drop the receiver first so a producer blocked on a full channel wakes and exits.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

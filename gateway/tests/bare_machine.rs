//! `scripts/services.sh` on machines that lack what the project needs, made
//! by hiding binaries behind a PATH of the test's own: with nothing and no
//! apt, one message names everything to install and `docker compose --env-file deploy/demo.env up`;
//! with apt (a stand-in that records what it is asked and "installs" by
//! linking the real binary), the missing piece is installed and the script
//! goes on to a running Postgres and Redis.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The real binary of `tool` (a version manager's shim would need its own PATH).
fn which(tool: &str) -> String {
    let find = if tool == "python3" {
        "python3 -c 'import sys; print(sys.executable)'".to_owned()
    } else {
        format!("command -v {tool}")
    };
    let out = Command::new("sh").arg("-c").arg(find).output().unwrap();
    let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!path.is_empty(), "{tool} is needed by this test");
    path
}

/// A directory of its own for one test's PATH, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("bare-machine-{}", ulid::Ulid::generate()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn link(dir: &Path, tools: &[&str]) {
    for tool in tools {
        symlink(which(tool), dir.join(tool)).unwrap();
    }
}

fn services(path: &Path) -> (bool, String) {
    let out = Command::new("/bin/bash")
        .arg(format!("{ROOT}/scripts/services.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn without_tools_or_apt_one_message_names_all_that_is_missing() {
    let dir = TempDir::new();
    link(dir.path(), &["id"]);
    let (ok, output) = services(dir.path());
    assert!(!ok, "{output}");
    for what in [
        "Rust with cargo",
        "PostgreSQL 15 or newer",
        "Redis 7 or newer",
        "redis-cli",
        "Python 3 with venv",
        "docker compose --env-file deploy/demo.env up",
    ] {
        assert!(output.contains(what), "{what} in: {output}");
    }
    assert!(!output.contains("installing"), "{output}");
}

#[test]
fn with_apt_the_missing_piece_is_installed_and_the_services_come_up() {
    let dir = TempDir::new();
    // Everything but redis-cli, which the apt stand-in "installs".
    link(
        dir.path(),
        &[
            "id",
            "cargo",
            "pg_ctlcluster",
            "pg_isready",
            "psql",
            "redis-server",
            "python3",
            "ls",
            "sort",
            "tail",
            "seq",
            "sleep",
            "env",
            "cat",
        ],
    );
    let log = dir.path().join("apt.log");
    let apt = dir.path().join("apt-get");
    std::fs::write(
        &apt,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\ncase \"$*\" in *redis-tools*) '{ln}' -s '{cli}' '{dir}/redis-cli';; esac\n",
            log = log.display(),
            ln = which("ln"),
            cli = which("redis-cli"),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&apt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (ok, output) = services(dir.path());
    if !nix_root() {
        // apt needs root (or password-less sudo); the message says what to install.
        assert!(!ok && output.contains("redis-tools"), "{output}");
        return;
    }
    assert!(ok, "{output}");
    assert!(
        output.contains("installing the Redis client (redis-cli)"),
        "{output}"
    );
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(
        asked.contains("update") && asked.contains("install -y -qq redis-tools"),
        "{asked}"
    );
}

fn nix_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0"
}

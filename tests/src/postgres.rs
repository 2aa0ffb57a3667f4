//! A second PostgreSQL server of the test's own, for what needs another database server (a
//! module's data moved to a server of its own): `initdb` into a temporary directory and
//! `pg_ctl start` on a free port, trusting local connections; stopped and removed when dropped.
//!
//! The server programs come from `BANYAN_TEST_POSTGRES_BIN` (default: the newest
//! `/usr/lib/postgresql/<version>/bin`, Debian's layout). As root, they run as the `postgres`
//! user, which `initdb` requires.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Debug)]
pub struct SecondPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    // Dropped last: the server's files.
    _dir: tempfile::TempDir,
}

impl SecondPostgres {
    /// Starts one; `None` when PostgreSQL's tests are skipped (`BANYAN_SKIP_POSTGRES=1`, never
    /// in CI). Panics with the reason when it cannot be started otherwise.
    pub fn start() -> Option<Self> {
        let skip = std::env::var("BANYAN_SKIP_POSTGRES").is_ok_and(|v| v == "1");
        if skip && std::env::var_os("CI").is_none() {
            eprintln!("SKIPPED: a second PostgreSQL server (BANYAN_SKIP_POSTGRES=1)");
            return None;
        }
        let bin = std::env::var_os("BANYAN_TEST_POSTGRES_BIN")
            .map(PathBuf::from)
            .or_else(newest_debian_bin)
            .expect(
                "PostgreSQL's server programs: set BANYAN_TEST_POSTGRES_BIN to their directory",
            );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            bin,
            data: dir.path().join("data"),
            port,
            as_postgres,
            _dir: dir,
        };
        let data = server.data.display().to_string();
        run(&mut server.command(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
        ));
        let socket_dir = server
            .data
            .parent()
            .expect("the data's directory")
            .display()
            .to_string();
        let options =
            format!("-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off");
        let log = server
            .data
            .parent()
            .expect("a directory")
            .join("server.log");
        run(&mut server.command(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        ));
        Some(server)
    }

    /// The URL of database `name` on it, as its superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.args(args);
        command
    }
}

impl Drop for SecondPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn newest_debian_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| Path::new(bin).join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn run(command: &mut Command) {
    let out = command.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

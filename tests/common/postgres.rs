//! A real PostgreSQL server for a test: Debian's binaries, a cluster made by `initdb` in a
//! temporary directory, listening on a free loopback port with password authentication,
//! stopped (and its files removed) when the guard goes, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser's name and password (the password reaches switchhook from the
/// environment variable [`PASSWORD_ENV`]).
pub const USER: &str = "switchhook";
pub const PASSWORD: &str = "pg-test-0123";
pub const PASSWORD_ENV: &str = "SWITCHHOOK_TEST_PG_PASSWORD";

/// A running (or stopped) test cluster.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Debian's server binaries (`/usr/lib/postgresql/N/bin`, the newest N).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is not installed (apt-get install postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().expect("no /usr/lib/postgresql/N/bin/initdb").1
}

/// `initdb` and `postgres` refuse to run as root: as root, they run as the `postgres` user.
fn as_server_user(bin: &Path, tool: &str) -> Command {
    let tool = bin.join(tool);
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// A new cluster, started.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("switchhook-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let mut initdb = as_server_user(&bin, "initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb, "initdb");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let pg = Postgres {
            bin,
            log: dir.path().join("server.log"),
            data,
            port,
            _dir: dir,
        };
        pg.resume();
        pg
    }

    /// Starts the (stopped) server again, on the same port with the same data.
    pub fn resume(&self) {
        let mut c = as_server_user(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                self.port,
                self.data.display()
            ))
            .arg("start");
        run(c, "pg_ctl start");
        self.wait_until_ready(Duration::from_secs(30));
    }

    /// Stops the server (fast: connections are cut, as when it goes down).
    pub fn stop(&self) {
        let mut c = as_server_user(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop");
    }

    fn wait_until_ready(&self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < end, "PostgreSQL did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[call_store] url` for this server (no password: that comes from the environment).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname=postgres",
            self.port
        )
    }

    /// The `[call_store]` section for this server.
    pub fn section(&self) -> String {
        format!(
            "[call_store]\nurl = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
            self.url()
        )
    }

    /// A client connection, for the test's own queries.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!("{} password={PASSWORD}", self.url()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut c = as_server_user(&self.bin, "pg_ctl");
        let _ = c
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

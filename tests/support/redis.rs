//! A real `redis-server` on a free loopback port, plus a tiny RESP client for inspecting it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually_blocking, free_port};

pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let server = RedisServer {
            port,
            child,
            _dir: dir,
        };
        eventually_blocking(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                server
                    .try_command(&["PING"])
                    .ok()
                    .filter(|r| *r == Resp::Simple("PONG".into()))
            },
        );
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn command(&self, args: &[&str]) -> Resp {
        self.try_command(args).expect("redis answers")
    }

    pub fn try_command(&self, args: &[&str]) -> std::io::Result<Resp> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        stream.write_all(&out)?;
        read_resp(&mut BufReader::new(stream))
    }

    /// Every key and its raw value bytes (strings only), for "what does a dump reveal" tests.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let Resp::Array(keys) = self.command(&["KEYS", "*"]) else {
            panic!("KEYS answers an array")
        };
        keys.into_iter()
            .filter_map(|k| match k {
                Resp::Bulk(Some(k)) => Some(String::from_utf8_lossy(&k).into_owned()),
                _ => None,
            })
            .map(|k| {
                let v = match self.command(&["GET", &k]) {
                    Resp::Bulk(Some(v)) => v,
                    _ => Vec::new(),
                };
                (k, v)
            })
            .collect()
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.command(&["KEYS", pattern]) {
            Resp::Array(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                    _ => None,
                })
                .collect(),
            other => panic!("KEYS answered {other:?}"),
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh (empty) server on the same port, after `stop`.
    pub fn restart(&mut self) {
        self.child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server restarts");
        eventually_blocking(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                self.try_command(&["PING"])
                    .ok()
                    .filter(|r| *r == Resp::Simple("PONG".into()))
            },
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line.trim_end_matches("\r\n").to_string())
}

pub(crate) fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad RESP line {line:?}"),
        )
    };
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0u8; len as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(len as usize);
                Resp::Bulk(Some(buf))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_resp(r)?);
            }
            Resp::Array(items)
        }
        _ => return Err(bad()),
    })
}

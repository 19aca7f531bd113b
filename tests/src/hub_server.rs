//! A real HTTP/1.1 server on 127.0.0.1 that speaks the Hugging Face hub's file protocol:
//! `HEAD` and `GET /{owner}/{name}/resolve/{revision}/{file}` (dataset repositories:
//! `/datasets/{owner}/{name}/...`, published here as `datasets/owner/name`) answered with `ETag`,
//! `X-Repo-Commit` and `Content-Length`, 404s carrying `X-Error-Code` as the hub's do. Point
//! `HF_ENDPOINT` at [`HubServer::url`]. Switches make file downloads fail (status 500 with an
//! error body, a body cut short) and a counter says how many file bodies were sent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How file GETs are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// The file, whole.
    #[default]
    None,
    /// Status 500 with a short text body (HEAD still succeeds, as behind a failing CDN).
    Status500,
    /// Status 200 announcing the full length, then half the body and a closed connection.
    Truncate,
}

#[derive(Default)]
struct Repo {
    /// commit -> file -> bytes
    commits: HashMap<String, HashMap<String, Vec<u8>>>,
    /// branch -> commit
    refs: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    fault: Fault,
    token: Option<String>,
    file_gets: usize,
    requests: Vec<String>,
}

/// The running server; stopped when dropped.
pub struct HubServer {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HubServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        HubServer {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Publishes `bytes` as `file` of `repo` at `commit` (`datasets/owner/name` for a dataset).
    pub fn add_file(&self, repo: &str, commit: &str, file: &str, bytes: Vec<u8>) {
        self.with(|s| {
            s.repos
                .entry(repo.into())
                .or_default()
                .commits
                .entry(commit.into())
                .or_default()
                .insert(file.into(), bytes);
        });
    }

    /// Publishes every file directly in `dir` at `commit`.
    pub fn add_folder(&self, repo: &str, commit: &str, dir: &Path) {
        for entry in std::fs::read_dir(dir).expect("readable folder").flatten() {
            let path = entry.path();
            if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                self.add_file(
                    repo,
                    commit,
                    &name,
                    std::fs::read(&path).expect("readable file"),
                );
            }
        }
    }

    /// Points branch `name` of `repo` at `commit`.
    pub fn set_ref(&self, repo: &str, name: &str, commit: &str) {
        self.with(|s| {
            s.repos
                .entry(repo.into())
                .or_default()
                .refs
                .insert(name.into(), commit.into());
        });
    }

    /// How file GETs are answered from now on.
    pub fn set_fault(&self, fault: Fault) {
        self.with(|s| s.fault = fault);
    }

    /// Every repository then needs `Authorization: Bearer TOKEN`.
    pub fn require_token(&self, token: &str) {
        self.with(|s| s.token = Some(token.into()));
    }

    /// File bodies sent so far (GETs answered 200 or with a fault).
    pub fn file_gets(&self) -> usize {
        self.with(|s| s.file_gets)
    }

    /// Request lines received so far (`HEAD /o/n/resolve/main/f`).
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// FNV-1a, hex: a stable ETag (the real hub uses the SHA-256 of LFS files).
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes of the body actually sent (`None`: all).
    cut: Option<usize>,
}

fn reply(status: &'static str, headers: Vec<(&str, String)>, body: &str) -> Reply {
    Reply {
        status,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        body: body.as_bytes().to_vec(),
        cut: None,
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request = line.trim().to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = request.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let r = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(format!("{method} {target}"));
        route(&mut s, method, target, auth.as_deref())
    };
    let mut out = conn;
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "GET" {
        let n = r.cut.unwrap_or(r.body.len());
        out.write_all(&r.body[..n])?;
    }
    out.flush()?;
    // A cut body ends with the connection, as a dropped download does.
    out.shutdown(std::net::Shutdown::Both)
}

fn route(s: &mut State, method: &str, target: &str, auth: Option<&str>) -> Reply {
    let segs: Vec<&str> = target.trim_start_matches('/').split('/').collect();
    // Dataset repositories live under /datasets/, apart from model repositories of that name.
    let (kind, segs) = match segs.split_first() {
        Some((&"datasets", rest)) => ("datasets/", rest),
        _ => ("", &segs[..]),
    };
    if !matches!(method, "HEAD" | "GET") || segs.len() < 5 || segs[2] != "resolve" {
        return reply("400 Bad Request", vec![], "unsupported request");
    }
    let repo_id = format!("{kind}{}/{}", segs[0], segs[1]);
    let (rev, file) = (segs[3], segs[4..].join("/"));
    if let Some(token) = &s.token {
        if auth != Some(format!("Bearer {token}").as_str()) {
            return reply(
                "401 Unauthorized",
                vec![("X-Error-Code", "RepoNotFound".into())],
                "Invalid username or password.",
            );
        }
    }
    let Some(repo) = s.repos.get(&repo_id) else {
        return reply(
            "404 Not Found",
            vec![("X-Error-Code", "RepoNotFound".into())],
            "Repository not found",
        );
    };
    let commit = repo
        .refs
        .get(rev)
        .cloned()
        .unwrap_or_else(|| rev.to_string());
    let Some(files) = repo.commits.get(&commit) else {
        return reply(
            "404 Not Found",
            vec![("X-Error-Code", "RevisionNotFound".into())],
            "Invalid rev id",
        );
    };
    let commit_header = ("X-Repo-Commit", commit.clone());
    let Some(bytes) = files.get(&file) else {
        return reply(
            "404 Not Found",
            vec![commit_header, ("X-Error-Code", "EntryNotFound".into())],
            "Entry not found",
        );
    };
    let headers: Vec<(String, String)> = [commit_header, ("ETag", format!("\"{}\"", etag(bytes)))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    // HEAD gets the file's length and no body (`serve` writes bodies for GET only).
    let file = |cut| Reply {
        status: "200 OK",
        headers: headers.clone(),
        body: bytes.clone(),
        cut,
    };
    if method == "HEAD" {
        return file(None);
    }
    s.file_gets += 1;
    match s.fault {
        Fault::None => file(None),
        Fault::Status500 => reply("500 Internal Server Error", vec![], "Internal Server Error"),
        Fault::Truncate => file(Some(bytes.len() / 2)),
    }
}

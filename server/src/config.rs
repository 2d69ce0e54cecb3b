//! Configuration with Redis's names, syntax and errors: a redis.conf-style file, `--name value`
//! command-line options (appended to the file, as redis-server does), `CONFIG GET/SET/REWRITE`.
//!
//! Every value is kept in its canonical text form (what `CONFIG GET` prints: memory sizes in
//! bytes, booleans as yes/no); typed accessors read it. Names Redis accepts that segkv has no use
//! for yet (`save`, `loglevel`, ...) are accepted and stored so existing config files load.
//!
//! ```
//! use segkv_server::config::Config;
//! let mut c = Config::default();
//! c.load_str("port 7000\nmaxmemory 64mb\n").unwrap();
//! assert_eq!(c.get("maxmemory"), "67108864");
//! assert_eq!(c.port(), 7000);
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use segkv_engine::FsyncPolicy;

use crate::glob;
use crate::resp::split_args;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Int(i64, i64),
    Mem(i64, i64),
    Enum(&'static [&'static str]),
    Str,
    /// `client-output-buffer-limit`
    OutputLimit,
    /// `save`
    Save,
    /// `replicaof host port`
    ReplicaOf,
}

#[derive(Debug)]
struct Def {
    name: &'static str,
    alias: Option<&'static str>,
    kind: Kind,
    default: &'static str,
    mutable: bool,
}

const I32: i64 = i32::MAX as i64;
const POLICIES: &[&str] = &[
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
];

macro_rules! def {
    ($name:expr, $kind:expr, $default:expr, $mutable:expr) => {
        Def {
            name: $name,
            alias: None,
            kind: $kind,
            default: $default,
            mutable: $mutable,
        }
    };
    ($name:expr, $alias:expr, $kind:expr, $default:expr, $mutable:expr) => {
        Def {
            name: $name,
            alias: Some($alias),
            kind: $kind,
            default: $default,
            mutable: $mutable,
        }
    };
}

/// Every config name segkv knows, with Redis's types, ranges and defaults (except where segkv's
/// own defaults differ: `bind`, `dir`, `save`).
static DEFS: &[Def] = &[
    def!("bind", Kind::Str, "127.0.0.1", false),
    def!("port", Kind::Int(0, 65535), "6379", false),
    def!("dir", Kind::Str, "./data", false),
    def!("databases", Kind::Int(1, 16), "16", false),
    def!(
        "appendfsync",
        Kind::Enum(&["always", "everysec", "no"]),
        "everysec",
        false
    ),
    // The log is the data: always on. Accepted (and settable) for compatibility only.
    def!("appendonly", Kind::Bool, "yes", true),
    def!("appendfilename", Kind::Str, "appendonly.aof", false),
    def!("appenddirname", Kind::Str, "appendonlydir", false),
    def!("threads", Kind::Int(1, 1024), "0", false),
    def!("io-threads", Kind::Int(1, 128), "1", false),
    // 16 MiB: the cleaner reclaims a segment at a time, and the active segment's buffer is
    // preallocated, so smaller segments keep disk and memory closer to the live data.
    def!(
        "segment-size",
        Kind::Mem(1 << 20, 1 << 40),
        "16777216",
        false
    ),
    def!("checkpoint-interval", Kind::Int(0, I32), "60", true),
    // Garbage the log may hold before the cleaner starts, in percent of the live data: lower
    // keeps memory and disk closer to the live data, at more copying (clean.rs).
    def!("cleaner-garbage-percent", Kind::Int(1, 1000), "20", true),
    def!("maxclients", Kind::Int(1, I32), "10000", true),
    def!("maxmemory", Kind::Mem(0, i64::MAX), "0", true),
    def!("maxmemory-policy", Kind::Enum(POLICIES), "noeviction", true),
    def!("maxmemory-samples", Kind::Int(1, I32), "5", true),
    def!("maxmemory-eviction-tenacity", Kind::Int(0, 100), "10", true),
    def!("maxmemory-clients", Kind::Mem(0, i64::MAX), "0", true),
    def!("replicaof", "slaveof", Kind::ReplicaOf, "", false),
    // The backlog is the log's tail, kept on disk once a replica has attached (the cleaner
    // leaves it alone), and how far behind a replica may fall before it is dropped and
    // resyncs. Redis's default is 1mb of memory; segkv's costs disk, and a segment is 16mb.
    def!(
        "repl-backlog-size",
        Kind::Mem(1 << 20, i64::MAX),
        "67108864",
        true
    ),
    def!("repl-timeout", Kind::Int(1, I32), "60", true),
    // Accepted for compatibility: a primary sends its heartbeat every second (so that
    // master_last_io_seconds_ago stays near 0).
    def!(
        "repl-ping-replica-period",
        "repl-ping-slave-period",
        Kind::Int(1, I32),
        "10",
        true
    ),
    def!(
        "min-replicas-to-write",
        "min-slaves-to-write",
        Kind::Int(0, I32),
        "0",
        true
    ),
    def!(
        "min-replicas-max-lag",
        "min-slaves-max-lag",
        Kind::Int(0, I32),
        "10",
        true
    ),
    def!(
        "proto-max-bulk-len",
        Kind::Mem(1024 * 1024, i64::MAX),
        "536870912",
        true
    ),
    def!(
        "client-query-buffer-limit",
        Kind::Mem(1024 * 1024, i64::MAX),
        "1073741824",
        true
    ),
    def!(
        "client-output-buffer-limit",
        Kind::OutputLimit,
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        true
    ),
    def!("timeout", Kind::Int(0, I32), "0", true),
    def!("tcp-keepalive", Kind::Int(0, I32), "300", true),
    def!("tcp-backlog", Kind::Int(0, I32), "511", false),
    def!("save", Kind::Save, "", true),
    def!(
        "loglevel",
        Kind::Enum(&["debug", "verbose", "notice", "warning"]),
        "notice",
        true
    ),
    def!("logfile", Kind::Str, "", false),
    def!("pidfile", Kind::Str, "", false),
    def!("daemonize", Kind::Bool, "no", false),
    def!("protected-mode", Kind::Bool, "yes", true),
    def!("hz", Kind::Int(0, I32), "10", true),
    def!("dynamic-hz", Kind::Bool, "yes", true),
    def!("lazyfree-lazy-eviction", Kind::Bool, "no", true),
    def!("lazyfree-lazy-expire", Kind::Bool, "no", true),
    def!("lazyfree-lazy-server-del", Kind::Bool, "no", true),
    def!("lazyfree-lazy-user-del", Kind::Bool, "no", true),
    def!("lazyfree-lazy-user-flush", Kind::Bool, "no", true),
    def!(
        "replica-read-only",
        "slave-read-only",
        Kind::Bool,
        "yes",
        true
    ),
    def!(
        "replica-serve-stale-data",
        "slave-serve-stale-data",
        Kind::Bool,
        "yes",
        true
    ),
    def!("stop-writes-on-bgsave-error", Kind::Bool, "yes", true),
    def!("rdbcompression", Kind::Bool, "yes", true),
    def!("rdbchecksum", Kind::Bool, "yes", true),
    def!("dbfilename", Kind::Str, "dump.rdb", true),
    def!("latency-tracking", Kind::Bool, "yes", true),
    def!(
        "slowlog-log-slower-than",
        Kind::Int(-1, i64::MAX),
        "10000",
        true
    ),
    def!("slowlog-max-len", Kind::Int(0, i64::MAX), "128", true),
    def!("always-show-logo", Kind::Bool, "no", false),
    def!("set-proc-title", Kind::Bool, "yes", false),
    def!(
        "supervised",
        Kind::Enum(&["upstart", "systemd", "auto", "no"]),
        "no",
        false
    ),
    def!("activerehashing", Kind::Bool, "yes", true),
    def!("active-expire-effort", Kind::Int(1, 10), "1", true),
    def!("lfu-log-factor", Kind::Int(0, I32), "10", true),
    def!("lfu-decay-time", Kind::Int(0, I32), "1", true),
    def!("recover-corrupt", Kind::Bool, "no", false),
    // Test only, as in Redis: microseconds slept per record replayed at startup (-n: 1 us
    // every n records), so tests can watch the server while it is loading.
    def!("key-load-delay", Kind::Int(-I32 - 1, I32), "0", true),
    // As in Redis: clients are served while loading only once this much of the log is in.
    def!(
        "loading-process-events-interval-bytes",
        Kind::Int(1024, I32),
        "2097152",
        true
    ),
    // Redis defaults to "no"; segkv allows DEBUG (SLEEP) from loopback connections.
    def!(
        "enable-debug-command",
        Kind::Enum(&["no", "yes", "local"]),
        "local",
        false
    ),
];

fn def(name: &str) -> Option<&'static Def> {
    let lower = name.to_ascii_lowercase();
    DEFS.iter()
        .find(|d| d.name == lower || d.alias == Some(lower.as_str()))
}

/// Redis's `memtoull`: a number with an optional unit (k kb m mb g gb, any case).
pub fn parse_memory(s: &str) -> Option<i64> {
    let lower = s.to_ascii_lowercase();
    let units: &[(&str, i64)] = &[
        ("kb", 1024),
        ("mb", 1024 * 1024),
        ("gb", 1024 * 1024 * 1024),
        ("k", 1000),
        ("m", 1000 * 1000),
        ("g", 1000 * 1000 * 1000),
        ("b", 1),
    ];
    let (num, mul) = units
        .iter()
        .find_map(|(u, m)| lower.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((lower.as_str(), 1));
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    num.parse::<i64>().ok()?.checked_mul(mul)
}

/// A rejected value, with Redis's explanation (the part after "- ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

fn canonical(d: &Def, args: &[String]) -> Result<String, BadValue> {
    let one = || -> Result<&String, BadValue> {
        match args {
            [a] => Ok(a),
            _ => Err(BadValue("wrong number of arguments".into())),
        }
    };
    match d.kind {
        Kind::Bool => match one()?.to_ascii_lowercase().as_str() {
            "yes" => Ok("yes".into()),
            "no" => Ok("no".into()),
            _ => Err(BadValue("argument must be 'yes' or 'no'".into())),
        },
        Kind::Int(min, max) => {
            let v: i64 = one()?
                .parse()
                .map_err(|_| BadValue("argument couldn't be parsed into an integer".into()))?;
            if v < min || v > max {
                return Err(BadValue(format!(
                    "argument must be between {min} and {max} inclusive"
                )));
            }
            Ok(v.to_string())
        }
        Kind::Mem(min, max) => {
            let v = parse_memory(one()?)
                .ok_or_else(|| BadValue("argument must be a memory value".into()))?;
            if v < min || v > max {
                return Err(BadValue(format!(
                    "argument must be between {min} and {max} inclusive"
                )));
            }
            Ok(v.to_string())
        }
        Kind::Enum(names) => {
            let v = one()?.to_ascii_lowercase();
            if names.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(BadValue(format!(
                    "argument(s) must be one of the following: {}",
                    names.join(", ")
                )))
            }
        }
        Kind::Str => Ok(args.join(" ")),
        Kind::Save => {
            let words: Vec<&str> = args.iter().flat_map(|a| a.split_whitespace()).collect();
            if !words.len().is_multiple_of(2) || words.iter().any(|w| w.parse::<u64>().is_err()) {
                return Err(BadValue("Invalid save parameters".into()));
            }
            Ok(words.join(" "))
        }
        Kind::OutputLimit => {
            let words: Vec<&str> = args.iter().flat_map(|a| a.split_whitespace()).collect();
            if words.is_empty() || !words.len().is_multiple_of(4) {
                return Err(BadValue(
                    "Wrong number of arguments in buffer limit configuration.".into(),
                ));
            }
            let mut limits = parse_output_limits(DEFS_OUTPUT_DEFAULT).unwrap_or_default();
            for chunk in words.chunks(4) {
                let class = match chunk[0].to_ascii_lowercase().as_str() {
                    "normal" => 0,
                    "slave" | "replica" => 1,
                    "pubsub" => 2,
                    _ => {
                        return Err(BadValue(
                            "Invalid client class specified in buffer limit configuration.".into(),
                        ));
                    }
                };
                let hard = parse_memory(chunk[1]);
                let soft = parse_memory(chunk[2]);
                let secs = chunk[3].parse::<i64>().ok().filter(|s| *s >= 0);
                match (hard, soft, secs) {
                    (Some(h), Some(s), Some(t)) => limits[class] = (h, s, t),
                    _ => return Err(BadValue("Error in hard, soft or soft_seconds setting in buffer limit configuration.".into())),
                }
            }
            Ok(format_output_limits(&limits))
        }
        Kind::ReplicaOf => match args {
            [h, p] if h.eq_ignore_ascii_case("no") && p.eq_ignore_ascii_case("one") => {
                Ok(String::new())
            }
            [h, p] => {
                p.parse::<u16>()
                    .map_err(|_| BadValue("Invalid master port".into()))?;
                Ok(format!("{h} {p}"))
            }
            _ => Err(BadValue("wrong number of arguments".into())),
        },
    }
}

const DEFS_OUTPUT_DEFAULT: &str =
    "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";

/// Output buffer limits per class (normal, replica, pubsub): (hard bytes, soft bytes, soft seconds).
pub type OutputLimits = [(i64, i64, i64); 3];

fn parse_output_limits(s: &str) -> Option<OutputLimits> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let mut out = [(0, 0, 0); 3];
    for (i, c) in w.chunks(4).enumerate().take(3) {
        out[i] = (c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?);
    }
    Some(out)
}

fn format_output_limits(l: &OutputLimits) -> String {
    format!(
        "normal {} {} {} slave {} {} {} pubsub {} {} {}",
        l[0].0, l[0].1, l[0].2, l[1].0, l[1].1, l[1].2, l[2].0, l[2].1, l[2].2
    )
}

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    values: HashMap<&'static str, String>,
    /// The config file given at start, for CONFIG REWRITE.
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let mut values: HashMap<&'static str, String> = DEFS
            .iter()
            .map(|d| (d.name, d.default.to_string()))
            .collect();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        values.insert("threads", cores.to_string());
        Config { values, file: None }
    }
}

/// A config line that could not be applied; prints as redis-server's fatal config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub line_no: usize,
    pub line: String,
    pub why: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\n*** FATAL CONFIG FILE ERROR (segkv {}) ***\nReading the configuration file, at line {}\n>>> '{}'\n{}",
            env!("CARGO_PKG_VERSION"),
            self.line_no,
            self.line,
            self.why
        )
    }
}

/// Why a CONFIG SET failed, as Redis words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    Unknown(String),
    Immutable(String),
    Duplicate(String),
    Bad(String, String),
}

impl SetError {
    pub fn text(&self) -> String {
        match self {
            SetError::Unknown(n) => {
                format!("ERR Unknown option or number of arguments for CONFIG SET - '{n}'")
            }
            SetError::Immutable(n) => {
                format!(
                    "ERR CONFIG SET failed (possibly related to argument '{n}') - can't set immutable config"
                )
            }
            SetError::Duplicate(n) => {
                format!(
                    "ERR CONFIG SET failed (possibly related to argument '{n}') - duplicate parameter"
                )
            }
            SetError::Bad(n, why) => {
                format!("ERR CONFIG SET failed (possibly related to argument '{n}') - {why}")
            }
        }
    }
}

impl Config {
    /// Builds the configuration from redis-server style arguments: `[CONFIG_FILE] [--name value ...]`.
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut cfg = Config::default();
        let mut text = String::new();
        let mut rest = args;
        if let Some(first) = args.first()
            && !first.starts_with("--")
        {
            let path = PathBuf::from(first);
            text = if first == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| format!("reading stdin: {e}"))?
            } else {
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "Fatal error, can't open config file '{}': {e}",
                        path.display()
                    )
                })?
            };
            if first != "-" {
                cfg.file = Some(std::path::absolute(&path).unwrap_or(path));
            }
            rest = &args[1..];
        }
        // Options become config lines appended to the file's text, as in redis-server.
        let mut opts = String::new();
        for a in rest {
            if let Some(name) = a.strip_prefix("--") {
                if !opts.is_empty() {
                    opts.push('\n');
                }
                opts.push_str(name);
            } else {
                opts.push(' ');
                opts.push_str(&repr(a));
            }
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&opts);
        cfg.load_str(&text).map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// Applies config lines (`name arg...`, `#` comments, blank lines).
    pub fn load_str(&mut self, text: &str) -> Result<(), LoadError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: &str| LoadError {
                line_no: i + 1,
                line: line.to_string(),
                why: why.to_string(),
            };
            let Some(words) = split_args(line.as_bytes()) else {
                return Err(err("Unbalanced quotes in configuration line"));
            };
            let words: Vec<String> = words
                .into_iter()
                .map(|w| String::from_utf8_lossy(&w).into_owned())
                .collect();
            let Some(d) = def(&words[0]) else {
                if words[0].eq_ignore_ascii_case("include")
                    || words[0].eq_ignore_ascii_case("rename-command")
                {
                    continue;
                }
                return Err(err("Bad directive or wrong number of arguments"));
            };
            let args = &words[1..];
            let arity_ok = match d.kind {
                Kind::Str | Kind::Save | Kind::OutputLimit => !args.is_empty() || d.name == "save",
                Kind::ReplicaOf => args.len() == 2,
                _ => args.len() == 1,
            };
            if !arity_ok {
                return Err(err("Bad directive or wrong number of arguments"));
            }
            let v = canonical(d, args).map_err(|b| err(&b.0))?;
            self.values.insert(d.name, v);
        }
        Ok(())
    }

    /// The canonical value of `name` (a known name; "" otherwise).
    pub fn get(&self, name: &str) -> &str {
        def(name)
            .and_then(|d| self.values.get(d.name))
            .map(|s| s.as_str())
            .unwrap_or("")
    }

    fn num(&self, name: &str) -> i64 {
        self.get(name).parse().unwrap_or(0)
    }

    /// CONFIG GET: (name, value) for every name matching any pattern (glob, case-insensitive).
    pub fn get_matching(&self, patterns: &[&[u8]]) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for d in DEFS {
            let hit = patterns.iter().any(|p| {
                glob::matches(p, d.name.as_bytes(), true)
                    || d.alias
                        .is_some_and(|a| p.eq_ignore_ascii_case(a.as_bytes()))
            });
            if hit {
                out.push((d.name, self.values[d.name].clone()));
                if let Some(a) = d.alias
                    && patterns
                        .iter()
                        .any(|p| glob::matches(p, a.as_bytes(), true))
                {
                    out.push((a, self.values[d.name].clone()));
                }
            }
        }
        out
    }

    /// CONFIG SET with name/value pairs: all are checked first, then all applied.
    pub fn set_many(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<Vec<&'static str>, SetError> {
        let mut staged: Vec<(&'static str, String)> = Vec::new();
        for (name, value) in pairs {
            let name_s = String::from_utf8_lossy(name).into_owned();
            let Some(d) = def(&name_s) else {
                return Err(SetError::Unknown(name_s));
            };
            if !d.mutable {
                return Err(SetError::Immutable(name_s));
            }
            if staged.iter().any(|(n, _)| *n == d.name) {
                return Err(SetError::Duplicate(name_s));
            }
            let value_s = String::from_utf8_lossy(value).into_owned();
            let args: Vec<String> = match d.kind {
                Kind::Save | Kind::OutputLimit | Kind::ReplicaOf => {
                    value_s.split_whitespace().map(str::to_string).collect()
                }
                _ => vec![value_s],
            };
            let v = canonical(d, &args).map_err(|b| SetError::Bad(name_s.clone(), b.0))?;
            staged.push((d.name, v));
        }
        let names = staged.iter().map(|(n, _)| *n).collect();
        for (n, v) in staged {
            self.values.insert(n, v);
        }
        Ok(names)
    }

    /// REPLICAOF changed the primary: `host port`, or empty for none.
    pub fn set_replicaof(&mut self, value: String) {
        self.values.insert("replicaof", value);
    }

    /// CONFIG REWRITE: rewrites the config file in place, keeping comments and order, updating
    /// the lines of names whose value differs from the default and appending the rest.
    pub fn rewrite(&self) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Err("ERR The server is running without a config file".into());
        };
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let mut done: Vec<&'static str> = Vec::new();
        let mut out = Vec::new();
        for line in old.lines() {
            let t = line.trim();
            let name = t.split_whitespace().next().unwrap_or("");
            if t.starts_with('#') || t.is_empty() {
                if t != "# Generated by CONFIG REWRITE" {
                    out.push(line.to_string());
                }
                continue;
            }
            match def(name) {
                Some(d) if !done.contains(&d.name) => {
                    done.push(d.name);
                    if self.values[d.name] != d.default || t.len() > d.name.len() {
                        out.push(self.line_for(d));
                    }
                }
                Some(_) => {}
                None => out.push(line.to_string()),
            }
        }
        let mut appended = false;
        for d in DEFS {
            if !done.contains(&d.name) && self.values[d.name] != d.default && d.name != "threads" {
                if !appended {
                    out.push("# Generated by CONFIG REWRITE".into());
                    appended = true;
                }
                out.push(self.line_for(d));
            }
        }
        let text = out.join("\n") + "\n";
        let tmp = path.with_extension("rewrite.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("ERR Rewriting config file: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("ERR Rewriting config file: {e}"))?;
        Ok(())
    }

    fn line_for(&self, d: &Def) -> String {
        let v = &self.values[d.name];
        match d.kind {
            Kind::Str => format!("{} {}", d.name, quote(v)),
            Kind::OutputLimit => {
                let w: Vec<&str> = v.split_whitespace().collect();
                w.chunks(4)
                    .map(|c| format!("{} {}", d.name, c.join(" ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ if v.is_empty() => format!("{} \"\"", d.name),
            _ => format!("{} {}", d.name, v),
        }
    }

    pub fn bind(&self) -> Vec<String> {
        self.get("bind")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
    pub fn port(&self) -> u16 {
        self.num("port") as u16
    }
    pub fn dir(&self) -> &Path {
        Path::new(self.get("dir"))
    }
    pub fn databases(&self) -> usize {
        self.num("databases") as usize
    }
    pub fn appendfsync(&self) -> FsyncPolicy {
        FsyncPolicy::parse(self.get("appendfsync")).unwrap_or_default()
    }
    pub fn threads(&self) -> usize {
        self.num("threads").max(1) as usize
    }
    pub fn segment_size(&self) -> u64 {
        self.num("segment-size") as u64
    }
    pub fn maxclients(&self) -> usize {
        self.num("maxclients") as usize
    }
    pub fn proto_max_bulk_len(&self) -> u64 {
        self.num("proto-max-bulk-len") as u64
    }
    pub fn query_buffer_limit(&self) -> u64 {
        self.num("client-query-buffer-limit") as u64
    }
    pub fn output_limits(&self) -> OutputLimits {
        parse_output_limits(self.get("client-output-buffer-limit")).unwrap_or_default()
    }
    pub fn timeout(&self) -> u64 {
        self.num("timeout") as u64
    }
}

/// Redis's `sdscatrepr`: always quoted, with C escapes.
fn repr(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            c if c.is_ascii_graphic() || c == b' ' => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    out
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\'' && c != b'\\')
    {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn defaults_are_segkvs() {
        let c = Config::default();
        assert_eq!(c.bind(), vec!["127.0.0.1"]);
        assert_eq!(c.port(), 6379);
        assert_eq!(c.dir(), Path::new("./data"));
        assert_eq!(c.appendfsync(), FsyncPolicy::EverySec);
        assert_eq!(c.databases(), 16);
        assert!(c.threads() >= 1);
    }

    #[test]
    fn memory_units_follow_memtoull() {
        assert_eq!(parse_memory("64mb"), Some(64 << 20));
        assert_eq!(parse_memory("1GB"), Some(1 << 30));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("12"), Some(12));
        assert_eq!(parse_memory("1x"), None);
        assert_eq!(parse_memory("-1"), None);
    }

    #[test]
    fn command_line_options_override_the_file() {
        let dir = std::env::temp_dir().join(format!("segkv-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.conf");
        std::fs::write(&f, "port 7000\n# comment\nmaxmemory 1gb\n").unwrap();
        let c = Config::from_args(&args(&[
            f.to_str().unwrap(),
            "--port",
            "7001",
            "--replicaof",
            "h",
            "1",
        ]))
        .unwrap();
        assert_eq!(c.port(), 7001);
        assert_eq!(c.get("maxmemory"), "1073741824");
        assert_eq!(c.get("slaveof"), "h 1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_fail_like_redis() {
        let e = Config::from_args(&args(&["--foo", "bar"])).unwrap_err();
        assert!(
            e.contains(">>> 'foo \"bar\"'\nBad directive or wrong number of arguments"),
            "{e}"
        );
        let e = Config::from_args(&args(&["--port", "abc"])).unwrap_err();
        assert!(
            e.contains("argument couldn't be parsed into an integer"),
            "{e}"
        );
    }

    #[test]
    fn config_set_errors_have_redis_texts() {
        let mut c = Config::default();
        let set = |c: &mut Config, n: &str, v: &str| {
            c.set_many(&[(n.as_bytes(), v.as_bytes())])
                .map_err(|e| e.text())
        };
        assert_eq!(
            set(&mut c, "databases", "1"),
            Err("ERR CONFIG SET failed (possibly related to argument 'databases') - can't set immutable config".into())
        );
        assert_eq!(
            set(&mut c, "foo", "1"),
            Err("ERR Unknown option or number of arguments for CONFIG SET - 'foo'".into())
        );
        assert_eq!(
            set(&mut c, "timeout", "-1"),
            Err("ERR CONFIG SET failed (possibly related to argument 'timeout') - argument must be between 0 and 2147483647 inclusive".into())
        );
        assert!(set(&mut c, "maxmemory", "10mb").is_ok());
        assert_eq!(c.get("maxmemory"), "10485760");
        assert!(set(&mut c, "client-output-buffer-limit", "normal 1mb 2mb 3").is_ok());
        assert_eq!(c.output_limits()[0], (1 << 20, 2 << 20, 3));
    }

    #[test]
    fn config_get_globs_case_insensitively() {
        let c = Config::default();
        let got: Vec<_> = c
            .get_matching(&[b"MAXMEMORY*"])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(got.contains(&"maxmemory") && got.contains(&"maxmemory-policy"));
    }
}

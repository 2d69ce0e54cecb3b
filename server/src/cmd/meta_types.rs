//! Types of the generated command metadata (`meta.rs`).

/// A static RESP value: command metadata as Redis prints it (RESP3 types kept, so RESP2 and
/// RESP3 replies can both be produced).
#[derive(Debug, PartialEq)]
pub enum M {
    /// Simple string.
    Status(&'static str),
    /// Bulk string.
    Str(&'static str),
    Int(i64),
    Null,
    Arr(&'static [M]),
    Set(&'static [M]),
    /// Keys and values alternating.
    Map(&'static [M]),
}

/// Metadata of one command or subcommand, as `COMMAND INFO` and `COMMAND DOCS` report it.
#[derive(Debug)]
pub struct Meta {
    /// Lower-case name; subcommands are `parent|sub`.
    pub name: &'static str,
    /// Redis arity: N exactly, -N at least N (the name counts).
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub acl: &'static [&'static str],
    pub tips: M,
    pub key_specs: M,
    pub docs: M,
    pub subcommands: &'static [Meta],
}

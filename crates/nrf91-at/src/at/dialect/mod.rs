//! Dialects: how the application that relays AT commands on the UART wants
//! a command written and what it adds to the answers. Each dialect is one
//! implementation of [`DialectRules`] in a file of its own; [`ALL`] is the
//! registry (detection order, prompts the codec removes), and
//! [`DialectChoice`] names each for the config and the CLI.
//!
//! Why a handle to a `&'static dyn DialectRules` rather than an enum: the
//! client switches dialect at run time (detection), so it needs a value, not
//! a type parameter; and with an enum every behaviour would be a `match` in
//! the codec, the grammar and the client, which is what made a new dialect
//! touch eight places. A [`Dialect`] is `Copy`, compares by name, and can
//! be made for a dialect outside the registry (a test, or a user of the
//! crate with a relay of their own). The config and the CLI still choose by
//! name through [`DialectChoice`], whose serde derive keeps the config's words
//! and errors as they were (the CLI maps its own clap enum onto it).
//!
//! What stays out of the dialects: ANSI colours and other control
//! characters are removed from every line, and Zephyr log lines and boot
//! banners are notifications, whatever the dialect (any Zephyr application
//! prints them, and detection must read answers before the dialect is
//! known).

mod raw;
mod shell;

/// The dialects the station knows, in the order detection tries them:
/// shell first, because a raw AT host rejects `at '…'` with an immediate
/// `ERROR`, while a shell ignores a raw `AT+CGSN` silently (costing a
/// timeout). A new dialect is its file, its line here and its name in
/// [`DialectChoice`] (so the config and the CLI can choose it).
pub const ALL: &[Dialect] = &[Dialect::SHELL, Dialect::RAW];

/// What one dialect does to commands and answers.
pub trait DialectRules: Sync {
    /// The name the config, the CLI and the record use (`raw`, `shell`).
    fn name(&self) -> &'static str;

    /// The line written for `command` (e.g. `AT+CGSN`), without the line
    /// ending: also what an echo of it looks like.
    fn frame(&self, command: &str) -> String;

    /// Is `line` the peer echoing `command` (sent as `framed`)? By default
    /// only an exact copy is (a raw AT host with echo on).
    fn is_echo(&self, line: &str, command: &str, framed: &str) -> bool {
        exact_echo(line, command, framed)
    }

    /// `Some(rest)` when `line` starts with this dialect's prompt. The codec
    /// removes the prompts of every registered dialect from every line.
    fn strip_prompt<'a>(&self, line: &'a str) -> Option<&'a str> {
        let _ = line;
        None
    }

    /// An information line as the modem printed it, from the line as it
    /// arrived (undoes what the relay did to the modem's output).
    fn as_printed(&self, line: String) -> String {
        line
    }

    /// What the modem stores for credential `content` sent in a `%CMNG`
    /// write in this dialect (so its `%CMNG` list digest can be predicted).
    fn stored_credential(&self, content: &str) -> String {
        content.to_string()
    }
}

/// The echo every dialect recognises: the line as sent, or the command
/// itself (carriage returns aside).
pub fn exact_echo(line: &str, command: &str, framed: &str) -> bool {
    let strip_cr = |s: &str| s.replace('\r', "");
    line == framed || strip_cr(line) == strip_cr(command.trim())
}

/// A configured dialect, or detection at connect time: the config's and
/// the CLI's words (`auto` and each registered dialect's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DialectChoice {
    #[default]
    Auto,
    Raw,
    Shell,
}

impl DialectChoice {
    /// The fixed dialect, or `None` for auto-detection.
    pub fn fixed(self) -> Option<Dialect> {
        match self {
            DialectChoice::Auto => None,
            DialectChoice::Raw => Some(Dialect::RAW),
            DialectChoice::Shell => Some(Dialect::SHELL),
        }
    }
}

/// How commands are written to the peer: one dialect's rules.
#[derive(Clone, Copy)]
pub struct Dialect(&'static dyn DialectRules);

impl Dialect {
    /// A dialect from its rules (the registered ones are constants such as
    /// [`Dialect::RAW`], defined in their own files).
    pub const fn new(rules: &'static dyn DialectRules) -> Self {
        Dialect(rules)
    }

    pub fn rules(self) -> &'static dyn DialectRules {
        self.0
    }

    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// The registered dialect called `name`.
    pub fn named(name: &str) -> Option<Dialect> {
        ALL.iter().copied().find(|d| d.as_str() == name)
    }
}

impl PartialEq for Dialect {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Dialect {}

impl std::fmt::Debug for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Remove the prompts of every registered dialect from the start of `line`.
pub fn strip_prompts(mut line: &str) -> &str {
    while let Some(rest) = ALL.iter().find_map(|d| d.rules().strip_prompt(line)) {
        line = rest.trim_start();
    }
    line
}

#[cfg(test)]
mod tests;

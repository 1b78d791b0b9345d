//! Kafka's JAAS-style `sasl.jaas.config` values, as broker configs write
//! them:
//!
//! ```text
//! org.apache.kafka.common.security.plain.PlainLoginModule required
//!     username="admin" password="admin-secret" user_alice="alice-secret";
//! ```
//!
//! One login module: its class name, a control flag (`required`,
//! `requisite`, `sufficient`, `optional`), options `name=value` where the
//! value is a bare word or a double-quoted string (with `\"` and `\\`
//! escapes), and a closing semicolon. Anything else is refused, so a typo
//! fails at start-up instead of leaving a user out.

use std::collections::BTreeMap;

/// A parsed login module entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JaasEntry {
    pub module: String,
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

/// The login module of SASL/PLAIN users.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

const FLAGS: [&str; 4] = ["required", "requisite", "sufficient", "optional"];

/// Longest value accepted: far above any real user list.
const JAAS_BYTES_MAX: usize = 1 << 20;

/// Parses one JAAS entry; the error says what was expected where.
pub fn parse(text: &str) -> Result<JaasEntry, String> {
    if text.len() > JAAS_BYTES_MAX {
        return Err(format!("longer than {JAAS_BYTES_MAX} bytes"));
    }
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let module = p.word().ok_or("expected a login module class name")?;
    let flag = p.word().ok_or("expected a control flag after the module")?;
    if !FLAGS.contains(&flag.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "control flag '{flag}' is not one of {}",
            FLAGS.join(", ")
        ));
    }
    let mut options = BTreeMap::new();
    loop {
        p.skip_space();
        match p.peek() {
            Some(';') => {
                p.at += 1;
                break;
            }
            None => return Err("missing ';' at the end".into()),
            Some(_) => {}
        }
        let name = p.word().ok_or("expected an option name")?;
        p.skip_space();
        if p.peek() != Some('=') {
            return Err(format!("expected '=' after option '{name}'"));
        }
        p.at += 1;
        p.skip_space();
        let value = match p.peek() {
            Some('"') => p.quoted()?,
            _ => p
                .word()
                .ok_or_else(|| format!("option '{name}' has no value"))?,
        };
        if options.insert(name.clone(), value).is_some() {
            return Err(format!("option '{name}' appears twice"));
        }
    }
    p.skip_space();
    if p.peek().is_some() {
        return Err("more than one login module (text after ';')".into());
    }
    Ok(JaasEntry {
        module,
        flag,
        options,
    })
}

/// The users of a PLAIN entry: `user_<name>="<password>"` options. The
/// `username`/`password` options (the broker's own client login) name no
/// user that may log in.
pub fn plain_users(entry: &JaasEntry) -> Result<BTreeMap<String, String>, String> {
    if entry.module != PLAIN_LOGIN_MODULE {
        return Err(format!(
            "login module '{}' is not {PLAIN_LOGIN_MODULE}",
            entry.module
        ));
    }
    let mut users = BTreeMap::new();
    for (name, value) in &entry.options {
        match name.strip_prefix("user_") {
            Some("") => return Err("option 'user_' names no user".into()),
            Some(user) => {
                users.insert(user.to_string(), value.clone());
            }
            None if name == "username" || name == "password" => {}
            None => return Err(format!("unknown PlainLoginModule option '{name}'")),
        }
    }
    Ok(users)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// A bare word: anything up to space, `=`, `;` or a quote.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && !matches!(c, '=' | ';' | '"'))
        {
            self.at += 1;
        }
        (self.at > start).then(|| self.chars[start..self.at].iter().collect())
    }

    fn quoted(&mut self) -> Result<String, String> {
        debug_assert_eq!(self.peek(), Some('"'));
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("a quoted value is not closed".into()),
                Some('"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.at += 1;
                    let c = self.peek().ok_or("a quoted value ends in '\\'")?;
                    out.push(c);
                    self.at += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_style_plain_config() {
        let e = parse(
            "org.apache.kafka.common.security.plain.PlainLoginModule required \
             username=\"admin\" password=\"admin-secret\"\n user_alice=\"alice-secret\" \
             user_bob=b0b user_q=\"say \\\"hi\\\"; ok\";",
        )
        .unwrap();
        assert_eq!(e.module, PLAIN_LOGIN_MODULE);
        assert_eq!(e.flag, "required");
        let users = plain_users(&e).unwrap();
        assert_eq!(users["alice"], "alice-secret");
        assert_eq!(users["bob"], "b0b");
        assert_eq!(users["q"], "say \"hi\"; ok");
        assert!(!users.contains_key("admin"));
    }

    #[test]
    fn malformed_entries_say_why() {
        for (bad, why) in [
            ("", "module"),
            ("m", "control flag"),
            ("m maybe;", "control flag"),
            ("m required user_a=\"x\"", "';'"),
            ("m required user_a=\"x;", "not closed"),
            ("m required user_a;", "'='"),
            ("m required user_a=;", "no value"),
            ("m required a=1 a=2;", "twice"),
            ("m required; n required;", "more than one"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let e = parse("other.Module required user_a=\"x\";").unwrap();
        assert!(plain_users(&e).unwrap_err().contains("PlainLoginModule"));
        let e = parse(&format!("{PLAIN_LOGIN_MODULE} required usr_a=\"x\";")).unwrap();
        assert!(plain_users(&e).unwrap_err().contains("usr_a"));
    }
}

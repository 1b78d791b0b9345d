//! The principal of a TLS client: its certificate's subject as an RFC
//! 2253 distinguished name (`CN=alice,OU=eng,O=Acme`, most specific RDN
//! first, as Kafka prints it), passed through `ssl.principal.mapping.rules`.
//!
//! Rules are Kafka's: a comma-separated list of `DEFAULT` (the DN as is)
//! and `RULE:pattern/replacement/` with an optional `L` or `U` after the
//! last slash to lower- or upper-case the result. The first rule whose
//! pattern matches the whole DN decides; a DN no rule matches is refused,
//! as Kafka refuses it.

use regex::Regex;
use x509_parser::prelude::*;

/// Longest rule list accepted.
const RULES_BYTES_MAX: usize = 4096;

#[derive(Clone, Debug)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// `ssl.principal.mapping.rules`, parsed.
#[derive(Clone, Debug)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

/// Reads up to the next unescaped '/'; returns the text and the rest
/// after the slash.
fn until_slash(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'/' => return Some((&text[..i], &text[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// Java's `$1` group references, in the form Rust's regex reads without
/// taking following letters into the group name.
fn java_replacement(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next().map(|n| {
                if n == '$' {
                    "$$".to_string()
                } else {
                    n.to_string()
                }
            })),
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

impl PrincipalMapper {
    pub fn parse(text: &str) -> Result<PrincipalMapper, String> {
        if text.len() > RULES_BYTES_MAX {
            return Err(format!("longer than {RULES_BYTES_MAX} bytes"));
        }
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let bad = || format!("'{rest}': expected RULE:pattern/replacement/[LU]");
                let (pattern, after) = until_slash(after).ok_or_else(bad)?;
                let (replacement, after) = until_slash(after).ok_or_else(bad)?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let anchored = format!("^(?:{pattern})$");
                let pattern = Regex::new(&anchored).map_err(|e| format!("'{pattern}': {e}"))?;
                rules.push(Rule::Replace {
                    pattern,
                    replacement: java_replacement(replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!("'{rest}': expected DEFAULT or RULE:"));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("'{rest}': expected ',' between rules")),
            }
        }
        if rules.is_empty() {
            return Err("no rule".into());
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal of a peer that showed the DER certificate `cert`:
    /// `User:` and its subject DN through the rules, or why there is none.
    /// Client listeners and the controller listener both name peers so.
    pub fn principal(&self, cert: &[u8]) -> Result<crate::security::Principal, String> {
        let name = subject_dn(cert).and_then(|dn| self.map(&dn))?;
        Ok(crate::security::Principal::user(name))
    }

    /// The principal name for `dn`, or why none applies.
    pub fn map(&self, dn: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(dn.to_string()),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } if pattern.is_match(dn) => {
                    let name = pattern.replace(dn, replacement.as_str()).into_owned();
                    return Ok(match case {
                        Some('L') => name.to_lowercase(),
                        Some('U') => name.to_uppercase(),
                        _ => name,
                    });
                }
                Rule::Replace { .. } => {}
            }
        }
        Err(format!(
            "no ssl.principal.mapping.rules rule applies to {dn}"
        ))
    }
}

/// Short names RFC 2253 gives attribute types; others print as OIDs.
fn attribute_name(oid: &x509_parser::der_parser::oid::Oid) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.9" => "STREET".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        other => other.to_string(),
    }
}

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || edge_space
            || (i == 0 && c == '#')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject of a DER certificate as an RFC 2253 string.
pub fn subject_dn(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|a| {
                let value = a
                    .as_str()
                    .map_or_else(|_| format!("#{}", hex(a.attr_value().data)), escape);
                format!("{}={value}", attribute_name(a.attr_type()))
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_the_dn() {
        let m = PrincipalMapper::parse("DEFAULT").unwrap();
        assert_eq!(
            m.map("CN=alice,OU=eng,O=Acme").unwrap(),
            "CN=alice,OU=eng,O=Acme"
        );
    }

    #[test]
    fn rules_rewrite_and_change_case() {
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*)$/$1@$2/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(m.map("CN=kafka,OU=ServiceUsers,O=Acme").unwrap(), "kafka");
        assert_eq!(m.map("CN=Alice,OU=ENG,O=Acme").unwrap(), "alice@eng");
        assert_eq!(m.map("O=Acme").unwrap(), "O=Acme");
        let upper = PrincipalMapper::parse("RULE:^CN=([^,]*).*$/$1x/U").unwrap();
        assert_eq!(upper.map("CN=bob,O=Acme").unwrap(), "BOBX");
    }

    #[test]
    fn a_dn_no_rule_matches_is_refused() {
        let m = PrincipalMapper::parse("RULE:^CN=admin$/root/").unwrap();
        assert!(m.map("CN=eve,O=Acme").unwrap_err().contains("CN=eve"));
        assert!(PrincipalMapper::parse("RULE:(/x").is_err());
        assert!(PrincipalMapper::parse("SOMETIMES").is_err());
        assert!(PrincipalMapper::parse("").is_err());
    }

    #[test]
    fn values_escape_as_rfc_2253_says() {
        assert_eq!(escape("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("#1"), "\\#1");
    }
}

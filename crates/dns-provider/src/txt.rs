//! TXT values as DNS zone data writes them: one or more quoted character strings of at most 255
//! bytes each (RFC 1035 3.3.14), `"` and `\` escaped. Route53, Cloudflare, Cloud DNS and
//! PowerDNS all take and give TXT content in this form; this module is their one copy.
//!
//! It only converts strings: it must not know any provider's API or decide which values to keep
//! (that is `rrset`'s job).

/// The longest character string a TXT record can hold.
const MAX_STRING: usize = 255;

/// Quotes `value`, splitting it into strings of at most 255 bytes (`"aaa…" "bbb"`), never inside
/// a UTF-8 character.
pub(crate) fn quote(value: &str) -> String {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut len = 0;
    for ch in value.chars() {
        if len + ch.len_utf8() > MAX_STRING {
            parts.push(std::mem::take(&mut current));
            len = 0;
        }
        if ch == '"' || ch == '\\' {
            current.push('\\');
        }
        current.push(ch);
        len += ch.len_utf8();
    }
    parts.push(current);
    parts.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(" ")
}

/// Undoes [`quote`]: joins the character strings and unescapes `\"`, `\\` and `\DDD` (decimal).
/// Content that does not start with a quote is returned as is (some tools store it unquoted).
pub(crate) fn unquote(raw: &str) -> String {
    let raw = raw.trim();
    if !raw.starts_with('"') {
        return raw.to_string();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut inside = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !inside {
            inside = c == b'"';
            i += 1;
            continue;
        }
        match c {
            b'"' => inside = false,
            b'\\' if bytes.get(i + 1..i + 4).is_some_and(|d| d.iter().all(u8::is_ascii_digit)) => {
                let d = &bytes[i + 1..i + 4];
                let n = u32::from(d[0] - b'0') * 100 + u32::from(d[1] - b'0') * 10 + u32::from(d[2] - b'0');
                out.push(u8::try_from(n).unwrap_or(b'?'));
                i += 3;
            }
            b'\\' if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 1;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_one_string() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(unquote("\"abc\""), "abc");
    }

    #[test]
    fn long_values_are_split_at_255_bytes_and_joined_back() {
        let value = "x".repeat(300);
        let quoted = quote(&value);
        assert_eq!(quoted, format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45)));
        assert_eq!(unquote(&quoted), value);
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        let value = r#"say "hi" \o/"#;
        let quoted = quote(value);
        assert_eq!(quoted, r#""say \"hi\" \\o/""#);
        assert_eq!(unquote(&quoted), value);
        assert_eq!(unquote(r#""\065\066""#), "AB");
    }

    #[test]
    fn unquoted_content_is_kept() {
        assert_eq!(unquote("plain-token"), "plain-token");
    }

    #[test]
    fn multibyte_characters_are_not_cut() {
        let value = "é".repeat(200); // 400 bytes
        let quoted = quote(&value);
        assert!(quoted.split("\" \"").all(|s| s.trim_matches('"').len() <= 255));
        assert_eq!(unquote(&quoted), value);
    }
}

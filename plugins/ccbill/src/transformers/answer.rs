//! Reading DataLink's answer body: a result code in CSV or XML, or a plain-text refusal.
//!
//! Shapes (providers.md section 4):
//! - CSV, CCBill's default: a quoted header line and a quoted value line, `"results"\n"1"\n`.
//!   The seed prints it flattened on one line (`"results" "1"`), which is accepted too.
//! - XML (`returnXML=1`): `<?xml version='1.0'?><results>1</results>`.
//! - Some authentication failures come back as plain text ("authentication failed",
//!   "access denied", "invalid username"), with HTTP 200.
//! - CCBill's DataLink page documents login errors answered as text, `Error: 01` to `Error: 04`
//!   (too many failed logins, failed login, inactive username, IP check failed), possibly
//!   followed by CCBill's words.
//!
//! Both formats are recognised whichever one the account asked for: the result code is
//! unambiguous either way, and refusing a readable answer would turn a definite result into an
//! unknown one. Anything else is unreadable, and the caller decides what that means.

use crate::account::ResponseFormat;

/// A result document is a few dozen bytes; anything far larger is not one, and is not scanned.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How many characters of an unreadable answer an error quotes.
const EXCERPT_CHARACTERS: usize = 200;

/// Plain-text login refusals seen from DataLink (providers.md: open-rails' sniffing logic),
/// compared in lower case.
const PLAIN_TEXT_AUTH_FAILURES: [&str; 3] =
    ["authentication failed", "access denied", "invalid username"];

/// What the body said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A result document with this code, in this format.
    ResultCode { code: i64, format: ResponseFormat },
    /// A plain-text login refusal, quoted (bounded, not yet redacted).
    PlainTextAuthFailure { excerpt: String },
    /// An `Error: NN` answer with its number, quoted (bounded, not yet redacted).
    ErrorText { number: u16, excerpt: String },
}

/// Why a body is not an answer this plugin can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableAnswer {
    #[error("the answer is empty")]
    Empty,
    #[error("the answer is {0} bytes, far more than a DataLink result document")]
    TooLarge(usize),
    #[error("the answer is not UTF-8 text")]
    NotText,
    #[error("the answer is not a DataLink result document ({problem})")]
    NotAResultDocument {
        problem: &'static str,
        excerpt: String,
    },
}

impl UnreadableAnswer {
    /// The part of the body worth quoting, if any (bounded, not yet redacted).
    pub fn excerpt(&self) -> Option<&str> {
        match self {
            Self::NotAResultDocument { excerpt, .. } => Some(excerpt),
            _ => None,
        }
    }
}

/// Reads an answer body.
pub fn read_answer(body: &[u8]) -> Result<Answer, UnreadableAnswer> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(UnreadableAnswer::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| UnreadableAnswer::NotText)?;
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Err(UnreadableAnswer::Empty);
    }
    if let Some(number) = parse_error_text(text) {
        return Ok(Answer::ErrorText {
            number,
            excerpt: excerpt(text),
        });
    }
    let parsed = if text.starts_with('<') {
        parse_xml(text).map(|value| (value, ResponseFormat::Xml))
    } else {
        parse_csv(text).map(|value| (value, ResponseFormat::Csv))
    };
    match parsed {
        Ok((value, format)) => match parse_code(value) {
            Some(code) => Ok(Answer::ResultCode { code, format }),
            None => Err(UnreadableAnswer::NotAResultDocument {
                problem: "the result is not an integer code",
                excerpt: excerpt(text),
            }),
        },
        Err(problem) => {
            let lower = text.to_lowercase();
            if PLAIN_TEXT_AUTH_FAILURES
                .iter()
                .any(|phrase| lower.contains(phrase))
            {
                Ok(Answer::PlainTextAuthFailure {
                    excerpt: excerpt(text),
                })
            } else {
                Err(UnreadableAnswer::NotAResultDocument {
                    problem,
                    excerpt: excerpt(text),
                })
            }
        }
    }
}

/// A bounded, single-line quotation of provider text.
pub fn excerpt(text: &str) -> String {
    let mut quoted: String = text
        .chars()
        .take(EXCERPT_CHARACTERS)
        .map(|character| {
            if character.is_control() {
                ' '
            } else {
                character
            }
        })
        .collect();
    if text.chars().nth(EXCERPT_CHARACTERS).is_some() {
        quoted.push('…');
    }
    quoted
}

/// `Error: 02`, `error:2`, `Error: 04 IP check failed`: the number of a DataLink `Error:` answer.
/// At most three digits, then the end or a separator before CCBill's words; anything else
/// (`Error: x`, `Error: 02x`, `Errors: 1`) is not one.
fn parse_error_text(text: &str) -> Option<u16> {
    let head = text.get(..6)?;
    if !head.eq_ignore_ascii_case("error:") {
        return None;
    }
    let rest = text.get(6..)?.trim_start();
    let digits_end = rest
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, after) = rest.split_at(digits_end);
    if digits.is_empty() || digits.len() > 3 {
        return None;
    }
    let separated = after.is_empty()
        || after.starts_with(|character: char| {
            character.is_whitespace() || matches!(character, '-' | ':' | ',' | '.' | ';')
        });
    if !separated {
        return None;
    }
    digits.parse().ok()
}

/// `-12`, `1`, `+1`: at most ten digits, so the value always fits an `i64`.
fn parse_code(value: &str) -> Option<i64> {
    let value = value.trim();
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Finds the `results` column of a CSV answer and returns its value, unquoted.
fn parse_csv(text: &str) -> Result<&str, &'static str> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    match lines.as_slice() {
        [single] => parse_flattened_csv(single),
        [header, values] => {
            let header =
                split_csv_line(header).ok_or("the CSV header has an unterminated quote")?;
            let column = header
                .iter()
                .position(|name| name.trim().eq_ignore_ascii_case("results"))
                .ok_or("the CSV has no `results` header")?;
            let values =
                split_csv_line(values).ok_or("the CSV values have an unterminated quote")?;
            if values.len() != header.len() {
                return Err("the CSV values do not match its header");
            }
            values
                .get(column)
                .copied()
                .ok_or("the CSV has no value under `results`")
        }
        [] => Err("the answer is blank"),
        _ => Err("the CSV has more rows than a result document"),
    }
}

/// The seed's flattened form, `"results" "1"`: the header and the value separated by spaces.
fn parse_flattened_csv(line: &str) -> Result<&str, &'static str> {
    let rest = line
        .strip_prefix("\"results\"")
        .or_else(|| line.strip_prefix("results"))
        .ok_or("the CSV has no `results` header")?;
    if !rest.starts_with([' ', '\t']) {
        return Err("the CSV has a header but no value");
    }
    let value = rest.trim();
    let unquoted = match value.strip_prefix('"') {
        Some(inner) => inner
            .strip_suffix('"')
            .ok_or("the CSV value has an unterminated quote")?,
        None => value,
    };
    if unquoted.contains(['"', ' ', '\t', ',']) {
        return Err("the CSV line holds more than a header and a value");
    }
    Ok(unquoted)
}

/// Splits one CSV line into fields, unquoting `"…"` fields. Returns borrowed slices, so a field
/// holding an escaped quote (`""`) keeps it doubled: a result code never contains one.
fn split_csv_line(line: &str) -> Option<Vec<&str>> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start();
        let (field, after) = if let Some(quoted) = trimmed.strip_prefix('"') {
            let end = closing_quote(quoted)?;
            let (field, after) = quoted.split_at(end);
            (field, after.get(1..).unwrap_or("").trim_start())
        } else {
            match trimmed.find(',') {
                Some(comma) => trimmed.split_at(comma),
                None => (trimmed, ""),
            }
        };
        fields.push(field);
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None if after.trim().is_empty() => return Some(fields),
            // Text after a closing quote that is not a separator: not CSV.
            None => return None,
        }
    }
}

/// The byte index of the quote that closes a quoted field (`""` is an escaped quote).
fn closing_quote(quoted: &str) -> Option<usize> {
    let bytes = quoted.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes.get(index) == Some(&b'"') {
            if bytes.get(index + 1) == Some(&b'"') {
                index += 2;
                continue;
            }
            return Some(index);
        }
        index += 1;
    }
    None
}

/// Returns the text of the `<results>` root element. Accepts an XML declaration, comments and
/// whitespace around it; refuses anything else (DOCTYPEs, other roots, child elements, text
/// after the root, truncation).
fn parse_xml(text: &str) -> Result<&str, &'static str> {
    let mut rest = text;
    if let Some(after) = rest.strip_prefix("<?xml") {
        let end = after
            .find("?>")
            .ok_or("the XML declaration is not closed")?;
        rest = after.get(end + 2..).unwrap_or("");
    }
    rest = skip_comments(rest)?;
    let after_name = rest
        .strip_prefix("<results")
        .ok_or("the XML root is not <results>")?;
    let start_tag_end = after_name
        .find('>')
        .ok_or("the <results> tag is not closed")?;
    let attributes = after_name.get(..start_tag_end).unwrap_or("");
    if !(attributes.is_empty() || attributes.starts_with(char::is_whitespace)) {
        return Err("the XML root is not <results>");
    }
    if attributes.ends_with('/') {
        return Err("the <results> element is empty");
    }
    let content_and_rest = after_name.get(start_tag_end + 1..).unwrap_or("");
    let end = content_and_rest
        .find("</results")
        .ok_or("the <results> element is not closed")?;
    let content = content_and_rest.get(..end).unwrap_or("");
    if content.contains('<') {
        return Err("the <results> element holds more than a result code");
    }
    let after_end = content_and_rest
        .get(end + "</results".len()..)
        .unwrap_or("");
    let after_close = after_end
        .trim_start()
        .strip_prefix('>')
        .ok_or("the </results> tag is not closed")?;
    if !skip_comments(after_close)?.is_empty() {
        return Err("there is content after the <results> element");
    }
    Ok(content)
}

fn skip_comments(text: &str) -> Result<&str, &'static str> {
    let mut rest = text.trim_start();
    while let Some(comment) = rest.strip_prefix("<!--") {
        let end = comment.find("-->").ok_or("an XML comment is not closed")?;
        rest = comment.get(end + 3..).unwrap_or("").trim_start();
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<(i64, ResponseFormat)> {
        match read_answer(body.as_bytes()) {
            Ok(Answer::ResultCode { code, format }) => Some((code, format)),
            _ => None,
        }
    }

    #[test]
    fn reads_documented_shapes() {
        assert_eq!(code("\"results\"\n\"1\"\n"), Some((1, ResponseFormat::Csv)));
        assert_eq!(
            code("\"results\"\r\n\"-12\"\r\n"),
            Some((-12, ResponseFormat::Csv))
        );
        assert_eq!(code("\"results\" \"1\""), Some((1, ResponseFormat::Csv)));
        assert_eq!(code("results\n-7\n"), Some((-7, ResponseFormat::Csv)));
        assert_eq!(
            code("\"other\",\"results\"\n\"x\",\"-3\"\n"),
            Some((-3, ResponseFormat::Csv))
        );
        assert_eq!(
            code("<?xml version='1.0'?><results>1</results>"),
            Some((1, ResponseFormat::Xml))
        );
        assert_eq!(
            code(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<results> -5 </results>\n"
            ),
            Some((-5, ResponseFormat::Xml))
        );
        assert_eq!(
            code("\u{feff}<results>-24</results >"),
            Some((-24, ResponseFormat::Xml))
        );
    }

    #[test]
    fn refuses_everything_else() {
        for body in [
            "",
            "   \n",
            "1",
            "\"1\"",
            "-7",
            "\"results\"",
            "\"results\"\n",
            "\"results\"\n\"abc\"\n",
            "\"results\"\n\"1\"\n\"2\"\n",
            "\"results\"\n\"1\",\"2\"\n",
            "\"results\n\"1\"\n",
            "\"results\"x\n\"1\"\n",
            "\"results\" \"1\" \"2\"",
            "\"results\"\"1\"",
            "<?xml version='1.0'?><results>1</resu",
            "<?xml version='1.0'?><results>1",
            "<?xml version='1.0'?><results/>",
            "<?xml version='1.0'?><resultsx>1</resultsx>",
            "<?xml version='1.0'?><results><code>1</code></results>",
            "<?xml version='1.0'?><results>1</results><results>1</results>",
            "<!DOCTYPE x [<!ENTITY a 'b'>]><results>1</results>",
            "<?xml version='1.0'",
            "<!-- never closed",
            "<html><body>Bad gateway</body></html>",
            "{\"results\": 1}",
            "\"results\"\n\"99999999999999999999\"\n",
        ] {
            assert!(code(body).is_none(), "{body:?} was read as a code");
        }
        assert_eq!(read_answer(b"\xff\xfe"), Err(UnreadableAnswer::NotText));
        assert_eq!(
            read_answer(&[b'1'; MAX_ANSWER_BYTES + 1]),
            Err(UnreadableAnswer::TooLarge(MAX_ANSWER_BYTES + 1))
        );
    }

    #[test]
    fn recognises_plain_text_login_refusals() {
        for body in [
            "Authentication failed",
            "ACCESS DENIED\n",
            "<html><p>Invalid username or password</p></html>",
        ] {
            assert!(
                matches!(
                    read_answer(body.as_bytes()),
                    Ok(Answer::PlainTextAuthFailure { .. })
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn reads_documented_error_texts() {
        for (body, expected) in [
            ("Error: 01", 1),
            ("Error: 02\n", 2),
            ("error:03", 3),
            ("ERROR: 04 - IP check failed", 4),
            ("\u{feff}  Error: 4.", 4),
            ("Error: 007", 7),
        ] {
            match read_answer(body.as_bytes()) {
                Ok(Answer::ErrorText { number, .. }) => assert_eq!(number, expected, "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_near_miss_error_texts() {
        for body in [
            "Error:",
            "Error: ",
            "Error: x",
            "Error: 02x",
            "Error: 1234",
            "Error: -7",
            "Errors: 1",
            "Err: 01",
            "The Error: 02",
            "Error: 99999999999999999999999",
        ] {
            assert!(
                !matches!(read_answer(body.as_bytes()), Ok(Answer::ErrorText { .. })),
                "{body:?} was read as an Error: answer"
            );
        }
    }
}

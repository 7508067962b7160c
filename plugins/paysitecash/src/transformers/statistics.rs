//! Reading a statistics answer into report records.
//!
//! The document says nothing about the body of a successful answer, and no public example was
//! found (providers.md section 1, "Response body — NOT FOUND"). This module follows providers.md's
//! GUESS — `text/plain`, one record per line, `;`-separated, a header line first — and is
//! tolerant of everything else:
//!
//! * an empty body is zero records;
//! * a body that is not delimited text (HTML, a single line without the delimiter, free text)
//!   is returned as bounded `raw_text` with no records, so a caller still sees what came;
//! * a body that is clearly not statistics (binary, or larger than [`MAX_BODY_BYTES`], or more
//!   than [`MAX_RECORDS`] lines) is a malformed-response error;
//! * every column is kept in `raw` under its header name, extra columns included; rows with too
//!   few or too many fields are kept too, with a note in `raw._notes` (and surplus values in
//!   `raw._extra`);
//! * text that is not UTF-8 is read as Windows-1252 (what a French PHP application of 2007 most
//!   likely sent), so no byte is replaced or lost.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use gatehouse_plugin_api::{Currency, Money, ReportRecord};
use serde_json::{Map, Value};

use crate::account::ParseSettings;

/// A body larger than this is refused rather than parsed.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A report with more data lines than this is refused rather than cut: a partial report
/// presented as complete would be wrong silently.
pub const MAX_RECORDS: usize = 100_000;
/// Unstructured text is returned cut to this many characters.
pub const MAX_RAW_TEXT_CHARS: usize = 64 * 1024;

/// Keys of `raw` the plugin adds itself; a header with one of these names is renamed.
pub const NOTES_KEY: &str = "_notes";
pub const EXTRA_KEY: &str = "_extra";

/// What a statistics body turned out to hold.
#[derive(Debug, PartialEq)]
pub enum Statistics {
    Records(Vec<ReportRecord>),
    /// Not delimited text: the text itself, bounded.
    Unstructured(String),
}

/// Why a body is clearly not statistics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the answer is {bytes} bytes, more than the {MAX_BODY_BYTES} bytes a statistics report is allowed"
    )]
    TooLarge { bytes: usize },
    #[error("the answer is binary data, not statistics text")]
    Binary,
    #[error(
        "the answer has more than {MAX_RECORDS} lines; the plugin refuses it rather than return part of it"
    )]
    TooManyRecords,
}

/// Whether bytes are binary rather than text: any NUL, or more than 1% control characters other
/// than tab, line feed, carriage return and form feed.
pub fn looks_binary(body: &[u8]) -> bool {
    if body.contains(&0) {
        return true;
    }
    let controls = body
        .iter()
        .filter(|byte| {
            (**byte < 0x20 && !matches!(**byte, b'\t' | b'\n' | b'\r' | 0x0c)) || **byte == 0x7f
        })
        .count();
    controls.saturating_mul(100) > body.len()
}

/// Decodes a body: UTF-8 when it is (a byte-order mark dropped), otherwise Windows-1252. A body
/// whose only flaw is a UTF-8 sequence cut at its very end (a prefix of a longer body) keeps its
/// valid part.
pub fn decode_text(body: &[u8]) -> Cow<'_, str> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    match std::str::from_utf8(body) {
        Ok(text) => Cow::Borrowed(text),
        Err(error) if error.error_len().is_none() => {
            let valid = body.get(..error.valid_up_to()).unwrap_or_default();
            String::from_utf8_lossy(valid)
        }
        Err(_) => Cow::Owned(body.iter().map(|byte| windows_1252(*byte)).collect()),
    }
}

/// Splits the body's text into records, per the module documentation.
pub fn parse_statistics(text: &str, settings: &ParseSettings) -> Result<Statistics, BodyError> {
    let mut lines = text
        .split(['\n', '\r'])
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());
    let Some((_, header_line)) = lines.next() else {
        return Ok(Statistics::Records(Vec::new()));
    };
    let starts_with_markup = text
        .trim_start_matches(['\u{feff}', ' ', '\t', '\n', '\r'])
        .starts_with('<');
    if starts_with_markup || !header_line.contains(settings.delimiter) {
        return Ok(Statistics::Unstructured(bounded(text)));
    }
    let mut header_fields = split_fields(header_line, settings.delimiter);
    // PHP exports often end every line with the delimiter; the empty last column is not data.
    let trailing_delimiter =
        header_fields.len() > 1 && header_fields.last().is_some_and(String::is_empty);
    if trailing_delimiter {
        header_fields.pop();
    }
    let headers = column_names(&header_fields);
    let roles = ColumnRoles::detect(&headers);
    let mut records = Vec::new();
    for (line_number, line) in lines {
        if records.len() >= MAX_RECORDS {
            return Err(BodyError::TooManyRecords);
        }
        let mut fields = split_fields(line, settings.delimiter);
        if trailing_delimiter
            && fields.len() > headers.len()
            && fields.last().is_some_and(String::is_empty)
        {
            fields.pop();
        }
        records.push(record(line_number, fields, &headers, &roles, settings));
    }
    Ok(Statistics::Records(records))
}

/// Cuts text to [`MAX_RAW_TEXT_CHARS`] characters, saying so when it does.
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_RAW_TEXT_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!(
            "{}\n… (cut: the answer has {} bytes)",
            text.get(..cut).unwrap_or_default(),
            text.len()
        ),
    }
}

/// Splits one line on `delimiter`, honouring double-quoted fields (`"a;b"`, `""` for a quote).
/// An unterminated quote takes the rest of the line as the field's text.
fn split_fields(line: &str, delimiter: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(character) = chars.next() {
                if character == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        break;
                    }
                } else {
                    field.push(character);
                }
            }
        }
        let mut ended_by_delimiter = false;
        for character in chars.by_ref() {
            if character == delimiter {
                ended_by_delimiter = true;
                break;
            }
            field.push(character);
        }
        fields.push(field);
        if !ended_by_delimiter {
            return fields;
        }
    }
}

/// Header names, trimmed, made unique (`amount`, `amount_2`), empty ones named `column_N`, and
/// kept clear of the keys the plugin adds to `raw`.
fn column_names(header_fields: &[String]) -> Vec<String> {
    let mut taken: HashSet<String> = [NOTES_KEY, EXTRA_KEY]
        .into_iter()
        .map(String::from)
        .collect();
    // The next suffix to try for each base name, so that a hostile header repeating one name
    // thousands of times is still named in linear time.
    let mut next_suffix: HashMap<String, usize> = HashMap::new();
    let mut names = Vec::with_capacity(header_fields.len());
    for (index, field) in header_fields.iter().enumerate() {
        let trimmed = field.trim();
        let base = if trimmed.is_empty() {
            format!("column_{}", index + 1)
        } else {
            trimmed.to_string()
        };
        let mut name = base.clone();
        if taken.contains(&name) {
            let suffix = next_suffix.entry(base.clone()).or_insert(2);
            loop {
                name = format!("{base}_{suffix}");
                *suffix += 1;
                if !taken.contains(&name) {
                    break;
                }
            }
        }
        taken.insert(name.clone());
        names.push(name);
    }
    names
}

/// Which columns fill the normalized fields of a record, found by their header names.
#[derive(Debug, Default)]
struct ColumnRoles {
    id: Option<usize>,
    date: Option<usize>,
    status: Option<usize>,
    party: Option<usize>,
    description: Option<usize>,
    currency: Option<usize>,
    /// Amount columns in header order, each with the currency its name states (`montant_eur`).
    /// The first fills `amount`; all of them fill `amounts`.
    amounts: Vec<(usize, Option<Currency>)>,
}

const ID_NAMES: &[&str] = &[
    "id",
    "transaction_id",
    "id_transaction",
    "transaction",
    "reference",
    "ref",
];
const DATE_NAMES: &[&str] = &[
    "date",
    "jour",
    "day",
    "datetime",
    "date_heure",
    "date_transaction",
    "transaction_date",
];
const STATUS_NAMES: &[&str] = &["status", "statut", "etat", "state"];
const PARTY_NAMES: &[&str] = &[
    "user",
    "username",
    "login",
    "webmaster",
    "affiliate",
    "affiliate_id",
    "affilie",
    "id_affilie",
    "customer",
    "client",
    "member",
    "membre",
    "pseudo",
];
const DESCRIPTION_NAMES: &[&str] = &[
    "description",
    "libelle",
    "designation",
    "label",
    "produit",
    "product",
];
const CURRENCY_NAMES: &[&str] = &["currency", "devise", "monnaie", "currency_code"];
const AMOUNT_NAMES: &[&str] = &[
    "amount",
    "montant",
    "total",
    "montant_total",
    "total_amount",
    "ca",
    "chiffre_d_affaires",
    "revenue",
    "revenus",
    "gain",
    "gains",
    "earnings",
    "commission",
    "commissions",
];

impl ColumnRoles {
    fn detect(headers: &[String]) -> Self {
        let canonical: Vec<String> = headers.iter().map(|name| canonical_name(name)).collect();
        let find = |names: &[&str]| {
            canonical
                .iter()
                .position(|name| names.contains(&name.as_str()))
        };
        let amounts = canonical
            .iter()
            .enumerate()
            .filter_map(|(index, name)| amount_column(name).map(|currency| (index, currency)))
            .collect();
        Self {
            id: find(ID_NAMES),
            date: find(DATE_NAMES),
            status: find(STATUS_NAMES),
            party: find(PARTY_NAMES),
            description: find(DESCRIPTION_NAMES),
            currency: find(CURRENCY_NAMES),
            amounts,
        }
    }
}

/// Whether a canonical header names an amount: one of [`AMOUNT_NAMES`], possibly followed by
/// the currency (`montant_eur`, `amount_usd`, `total_euros`). The inner option is that currency.
fn amount_column(canonical: &str) -> Option<Option<Currency>> {
    if AMOUNT_NAMES.contains(&canonical) {
        return Some(None);
    }
    let (stem, suffix) = canonical.rsplit_once('_')?;
    if !AMOUNT_NAMES.contains(&stem) {
        return None;
    }
    currency_from_marker(suffix).map(Some)
}

/// A header name lower-cased, with French accents folded and anything else but letters and
/// digits turned into single underscores (`Montant (€)` → `montant_eur`).
fn canonical_name(name: &str) -> String {
    let mut canonical = String::with_capacity(name.len());
    for character in name.trim().chars().flat_map(char::to_lowercase) {
        let folded = match character {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            '€' => {
                canonical.push_str("_eur_");
                continue;
            }
            other => other,
        };
        if folded.is_ascii_alphanumeric() {
            canonical.push(folded);
        } else if !canonical.ends_with('_') {
            canonical.push('_');
        }
    }
    let trimmed = canonical.trim_matches('_');
    let mut collapsed = String::with_capacity(trimmed.len());
    for character in trimmed.chars() {
        if !(character == '_' && collapsed.ends_with('_')) {
            collapsed.push(character);
        }
    }
    collapsed
}

/// A currency written as an ISO code (any case), `€`, or `euro(s)`.
fn currency_from_marker(marker: &str) -> Option<Currency> {
    let marker = marker.trim();
    if marker == "€" || marker.eq_ignore_ascii_case("euro") || marker.eq_ignore_ascii_case("euros")
    {
        return Currency::from_code("EUR").ok();
    }
    if marker.len() == 3 && marker.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return Currency::from_code(&marker.to_ascii_uppercase()).ok();
    }
    None
}

fn record(
    line_number: usize,
    fields: Vec<String>,
    headers: &[String],
    roles: &ColumnRoles,
    settings: &ParseSettings,
) -> ReportRecord {
    let mut notes: Vec<Value> = Vec::new();
    if fields.len() != headers.len() {
        notes.push(Value::String(format!(
            "line {line_number} has {} fields, the header has {}",
            fields.len(),
            headers.len()
        )));
    }
    let cell = |index: Option<usize>| {
        index
            .and_then(|index| fields.get(index))
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    let row_currency = match cell(roles.currency) {
        None => RowCurrency::Unstated,
        Some(marker) => match currency_from_marker(&marker) {
            Some(currency) => RowCurrency::Stated(currency),
            None => {
                notes.push(Value::String(format!(
                    "line {line_number}: currency `{}` is not an ISO 4217 code; amounts are left in raw",
                    gatehouse_plugin_api::error::truncate(&marker)
                )));
                RowCurrency::Unreadable
            }
        },
    };
    let mut amount = None;
    let mut amounts = BTreeMap::new();
    for (index, column_currency) in &roles.amounts {
        let (Some(text), Some(name)) = (cell(Some(*index)), headers.get(*index)) else {
            continue;
        };
        match read_amount(&text, *column_currency, row_currency, settings.currency) {
            AmountReading::Exact(money) => {
                if amount.is_none() {
                    amount = Some(money);
                }
                amounts.insert(name.clone(), money);
            }
            AmountReading::NoCurrency => {}
            AmountReading::Unreadable => notes.push(Value::String(format!(
                "line {line_number}: `{name}` is not an exact amount; it is left in raw"
            ))),
        }
    }
    let mut raw = Map::new();
    for (name, value) in headers.iter().zip(fields.iter()) {
        raw.insert(name.clone(), Value::String(value.clone()));
    }
    if fields.len() > headers.len() {
        let surplus = fields
            .iter()
            .skip(headers.len())
            .cloned()
            .map(Value::String)
            .collect();
        raw.insert(EXTRA_KEY.into(), Value::Array(surplus));
    }
    if !notes.is_empty() {
        raw.insert(NOTES_KEY.into(), Value::Array(notes));
    }
    ReportRecord {
        id: cell(roles.id),
        date: cell(roles.date),
        amount,
        status: cell(roles.status),
        party: cell(roles.party),
        description: cell(roles.description),
        amounts,
        raw: Value::Object(raw),
    }
}

#[derive(Clone, Copy)]
enum RowCurrency {
    Unstated,
    Stated(Currency),
    /// The row names a currency the plugin does not know: no amount of the row is converted.
    Unreadable,
}

enum AmountReading {
    Exact(Money),
    /// No currency anywhere (column name, cell, row, account): left in raw only, as documented.
    NoCurrency,
    Unreadable,
}

/// Reads an amount cell exactly. The currency comes from, in order: the column's name, a marker
/// in the cell (`12,50 €`, `EUR 12.50`), the row's currency column, the account's `currency`.
/// French (`1 234,50`) and English (`1,234.50`) separators are both accepted; anything that
/// would need rounding is refused.
fn read_amount(
    text: &str,
    column_currency: Option<Currency>,
    row_currency: RowCurrency,
    account_currency: Option<Currency>,
) -> AmountReading {
    let (number, cell_currency) = split_currency_marker(text);
    let currency = match (column_currency, cell_currency, row_currency) {
        (Some(currency), _, _) | (None, Some(currency), _) => currency,
        (None, None, RowCurrency::Stated(currency)) => currency,
        (None, None, RowCurrency::Unreadable) => return AmountReading::NoCurrency,
        (None, None, RowCurrency::Unstated) => match account_currency {
            Some(currency) => currency,
            None => return AmountReading::NoCurrency,
        },
    };
    let Some(decimal) = plain_decimal(number) else {
        return AmountReading::Unreadable;
    };
    match Money::parse_decimal(&decimal, currency) {
        Ok(money) => AmountReading::Exact(money),
        Err(_) => AmountReading::Unreadable,
    }
}

/// Separates a leading or trailing currency marker from the number.
fn split_currency_marker(text: &str) -> (&str, Option<Currency>) {
    let text = text.trim();
    if let Some(number) = text.strip_suffix('€') {
        return (number.trim(), currency_from_marker("€"));
    }
    if let Some(number) = text.strip_prefix('€') {
        return (number.trim(), currency_from_marker("€"));
    }
    if let Some((number, marker)) = text.rsplit_once(char::is_whitespace)
        && let Some(currency) = currency_from_marker(marker)
    {
        return (number.trim(), Some(currency));
    }
    if let Some((marker, number)) = text.split_once(char::is_whitespace)
        && let Some(currency) = currency_from_marker(marker)
    {
        return (number.trim(), Some(currency));
    }
    (text, None)
}

/// Rewrites `1 234,50`, `1.234,50` or `1,234.50` as `1234.50`. Returns `None` for text that is
/// not a number in one of those forms; thousands groups must have three digits, so a value such
/// as `12.5.3` is refused instead of being read as `1253`.
fn plain_decimal(number: &str) -> Option<String> {
    let number = number.trim();
    let (sign, unsigned) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number.strip_prefix('+').unwrap_or(number)),
    };
    let last_comma = unsigned.rfind(',');
    let last_dot = unsigned.rfind('.');
    let split_at = |index: usize| Some((unsigned.get(..index)?, unsigned.get(index + 1..)?));
    // (integer part, fraction, the separator used for thousands in the integer part)
    let (integer, fraction, thousands) = match (last_comma, last_dot) {
        (Some(comma), Some(dot)) if comma > dot => {
            let (integer, fraction) = split_at(comma)?;
            (integer, Some(fraction), Some('.'))
        }
        (Some(_), Some(dot)) => {
            let (integer, fraction) = split_at(dot)?;
            (integer, Some(fraction), Some(','))
        }
        (Some(comma), None) if unsigned.matches(',').count() == 1 => {
            let (integer, fraction) = split_at(comma)?;
            (integer, Some(fraction), None)
        }
        (None, Some(dot)) if unsigned.matches('.').count() == 1 => {
            let (integer, fraction) = split_at(dot)?;
            (integer, Some(fraction), None)
        }
        // Several of one separator and none of the other: thousands separators only.
        (Some(_), None) => (unsigned, None, Some(',')),
        (None, Some(_)) => (unsigned, None, Some('.')),
        (None, None) => (unsigned, None, None),
    };
    let is_group_separator = |character: char| {
        matches!(character, ' ' | '\u{a0}' | '\u{202f}' | '\'') || Some(character) == thousands
    };
    let groups: Vec<&str> = integer.split(is_group_separator).collect();
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    let grouping_ok = match groups.split_first() {
        None => false,
        Some((first, [])) => digits(first),
        Some((first, rest)) => {
            digits(first)
                && first.len() <= 3
                && rest.iter().all(|group| digits(group) && group.len() == 3)
        }
    };
    if !grouping_ok || fraction.is_some_and(|fraction| !digits(fraction)) {
        return None;
    }
    let mut plain = format!("{sign}{}", groups.concat());
    if let Some(fraction) = fraction {
        plain.push('.');
        plain.push_str(fraction);
    }
    Some(plain)
}

/// Windows-1252 to Unicode. The five undefined bytes map to the C1 controls of the same value,
/// as browsers do, so nothing is lost.
fn windows_1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9f => HIGH
            .get(usize::from(byte - 0x80))
            .copied()
            .unwrap_or(char::REPLACEMENT_CHARACTER),
        other => char::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_fields() {
        assert_eq!(
            split_fields("a;\"b;c\";\"d\"\"e\";", ';'),
            vec!["a", "b;c", "d\"e", ""]
        );
        assert_eq!(split_fields("\"open;rest", ';'), vec!["open;rest"]);
        assert_eq!(split_fields("", ';'), vec![""]);
    }

    #[test]
    fn canonical_header_names() {
        assert_eq!(canonical_name(" Montant (€) "), "montant_eur");
        assert_eq!(canonical_name("Libellé"), "libelle");
        assert_eq!(canonical_name("Chiffre d'affaires"), "chiffre_d_affaires");
        assert_eq!(
            amount_column("montant_eur").map(|c| c.map(|c| c.code())),
            Some(Some("EUR"))
        );
        assert_eq!(amount_column("montant"), Some(None));
        assert_eq!(amount_column("hits"), None);
        assert_eq!(amount_column("montant_xyz"), None);
    }

    #[test]
    fn plain_decimals() {
        for (text, plain) in [
            ("12,50", Some("12.50")),
            ("1 234,50", Some("1234.50")),
            ("1.234,50", Some("1234.50")),
            ("1,234.50", Some("1234.50")),
            ("-3", Some("-3")),
            ("1,234,567", Some("1234567")),
            ("+7.5", Some("7.5")),
            ("12.5.3", None),
            ("1 23,4", None),
            (",5", None),
            ("12a", None),
            ("", None),
        ] {
            assert_eq!(plain_decimal(text).as_deref(), plain, "{text}");
        }
    }

    #[test]
    fn decodes_windows_1252() {
        assert_eq!(decode_text(b"12,50 \x80 caf\xe9"), "12,50 € café");
        assert_eq!(decode_text("\u{feff}é".as_bytes()), "é");
        // A UTF-8 sequence cut at the end keeps the valid part.
        assert_eq!(decode_text(&"aé".as_bytes()[..2]), "a");
    }
}

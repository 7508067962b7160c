//! A small, bounded XML reader: the answer becomes a tree of elements with their text.
//!
//! Kolmisoft answers are small documents of plain elements, so a tree is the simplest thing to
//! check for shape. Reading it must survive a hostile or broken server: the body, each text, the
//! nesting depth and the number of elements are bounded, a document type declaration is refused
//! outright (no entity can be declared, so none can expand: billion laughs has nothing to
//! work with), only XML's predefined entities and character references are resolved, and every
//! failure is a typed error rather than a panic.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Larger bodies are refused before parsing. A payments report of this size already holds
/// well over a hundred thousand payments; ask for a shorter period instead.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The text of one element (a payment comment, a user name) is refused beyond this.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The documented answer nests four deep; anything much deeper is not a Kolmisoft answer.
pub const MAX_DEPTH: usize = 32;
/// A bound on the tree's size independent of the body's, since `<a/>` costs four bytes.
pub const MAX_ELEMENTS: usize = 1_000_000;

/// An element: its name, the text directly inside it, and its child elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    /// The concatenated text and CDATA directly inside the element, entities resolved, not
    /// trimmed (callers trim: the document's own example pads values with spaces).
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |child| child.name == name)
    }

    /// The first element named `name` in this element's subtree (itself included), depth first.
    pub fn find_descendant(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children
            .iter()
            .find_map(|child| child.find_descendant(name))
    }
}

/// Why a body is not a readable XML document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is {size} bytes, more than the {MAX_BODY_BYTES} bytes accepted")]
    BodyTooLarge { size: usize },
    #[error("the body is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("the body holds no XML element")]
    NoRootElement,
    #[error("the body is not well-formed XML at byte {position}: {detail}")]
    Syntax { position: u64, detail: String },
    #[error(
        "the document declares a document type (DTD), which is refused: entities it declares could expand without bound"
    )]
    DocumentTypeDeclaration,
    #[error("element <{name}> is never closed")]
    Unclosed { name: String },
    #[error("the document has more than one root element (<{first}> and <{second}>)")]
    SeveralRoots { first: String, second: String },
    #[error("the document has text outside its root element")]
    TextOutsideRoot,
    #[error("the text of <{name}> is longer than {MAX_TEXT_BYTES} bytes")]
    TextTooLong { name: String },
    #[error("elements are nested more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("the document has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
}

/// Reads `body` as one XML document within the bounds above.
pub fn parse_document(body: &[u8]) -> Result<Element, XmlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(XmlError::Empty);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(XmlError::BodyTooLarge { size: body.len() });
    }
    // The document declares UTF-8 and every Kolmisoft answer is UTF-8: checking once here means
    // every name and text below is valid text.
    let text = std::str::from_utf8(body).map_err(|error| XmlError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.expand_empty_elements = false;
    config.check_end_names = true;
    config.allow_unmatched_ends = false;
    config.trim_text(false);

    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut element_count = 0_usize;
    loop {
        let event = reader.read_event().map_err(|error| XmlError::Syntax {
            position: reader.error_position(),
            detail: gatehouse_plugin_api::error::truncate(&error.to_string()),
        })?;
        match event {
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::DocType(_) => return Err(XmlError::DocumentTypeDeclaration),
            Event::Start(start) => {
                let element = new_element(start.name().as_ref(), &root, &open, &mut element_count)?;
                open.push(element);
            }
            Event::Empty(start) => {
                let element = new_element(start.name().as_ref(), &root, &open, &mut element_count)?;
                close(element, &mut open, &mut root);
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches the open element.
                let Some(element) = open.pop() else {
                    return Err(XmlError::Syntax {
                        position: reader.buffer_position(),
                        detail: "an end tag closes nothing".into(),
                    });
                };
                close(element, &mut open, &mut root);
            }
            Event::Text(content) => {
                let unescaped = content.unescape().map_err(|error| XmlError::Syntax {
                    position: reader.buffer_position(),
                    detail: gatehouse_plugin_api::error::truncate(&error.to_string()),
                })?;
                append_text(&unescaped, &mut open)?;
            }
            Event::CData(content) => {
                let decoded = content.decode().map_err(|error| XmlError::Syntax {
                    position: reader.buffer_position(),
                    detail: gatehouse_plugin_api::error::truncate(&error.to_string()),
                })?;
                append_text(&decoded, &mut open)?;
            }
            Event::Eof => {
                if let Some(unclosed) = open.pop() {
                    return Err(XmlError::Unclosed {
                        name: unclosed.name,
                    });
                }
                return root.ok_or(XmlError::NoRootElement);
            }
        }
    }
}

fn new_element(
    raw_name: &[u8],
    root: &Option<Element>,
    open: &[Element],
    element_count: &mut usize,
) -> Result<Element, XmlError> {
    let name = String::from_utf8_lossy(raw_name).into_owned();
    if open.is_empty()
        && let Some(first) = root
    {
        return Err(XmlError::SeveralRoots {
            first: first.name.clone(),
            second: name,
        });
    }
    if open.len() >= MAX_DEPTH {
        return Err(XmlError::TooDeep);
    }
    *element_count += 1;
    if *element_count > MAX_ELEMENTS {
        return Err(XmlError::TooManyElements);
    }
    Ok(Element {
        name,
        ..Element::default()
    })
}

fn close(element: Element, open: &mut [Element], root: &mut Option<Element>) {
    match open.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn append_text(text: &str, open: &mut [Element]) -> Result<(), XmlError> {
    let Some(current) = open.last_mut() else {
        // Whitespace around the root (the newline after the declaration) is normal.
        return if text.trim().is_empty() {
            Ok(())
        } else {
            Err(XmlError::TextOutsideRoot)
        };
    };
    if current.text.len().saturating_add(text.len()) > MAX_TEXT_BYTES {
        return Err(XmlError::TextTooLong {
            name: current.name.clone(),
        });
    }
    current.text.push_str(text);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documents_example_shape() {
        let document = parse_document(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<page>\n <pagename> Payments_list </pagename>\n <payments><payment><user> a &amp; b </user><comment><![CDATA[<x>]]></comment></payment></payments>\n</page>\n",
        )
        .unwrap();
        assert_eq!(document.name, "page");
        assert_eq!(document.children[0].text, " Payments_list ");
        let payment = &document.children[1].children[0];
        assert_eq!(payment.children[0].text, " a & b ");
        assert_eq!(payment.children[1].text, "<x>");
    }

    #[test]
    fn refuses_what_is_not_one_bounded_document() {
        type Expectation = fn(&XmlError) -> bool;
        let cases: Vec<(Vec<u8>, Expectation)> = vec![
            (b"".to_vec(), |e| matches!(e, XmlError::Empty)),
            (b"  \n".to_vec(), |e| matches!(e, XmlError::Empty)),
            (b"<page><payments>".to_vec(), |e| {
                matches!(e, XmlError::Unclosed { .. } | XmlError::Syntax { .. })
            }),
            (b"<page></pages>".to_vec(), |e| {
                matches!(e, XmlError::Syntax { .. })
            }),
            (b"<a/><b/>".to_vec(), |e| {
                matches!(e, XmlError::SeveralRoots { .. })
            }),
            (b"hello".to_vec(), |e| {
                matches!(e, XmlError::TextOutsideRoot | XmlError::NoRootElement)
            }),
            (b"<a>&lol;</a>".to_vec(), |e| {
                matches!(e, XmlError::Syntax { .. })
            }),
            (
                b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>".to_vec(),
                |e| matches!(e, XmlError::DocumentTypeDeclaration),
            ),
            (
                vec![b'<', b'a', b'>', 0xff, 0xfe, b'<', b'/', b'a', b'>'],
                |e| matches!(e, XmlError::NotUtf8 { offset: 3 }),
            ),
            ("<a>".repeat(MAX_DEPTH + 1).into_bytes(), |e| {
                matches!(e, XmlError::TooDeep)
            }),
            (
                format!("<a>{}</a>", "x".repeat(MAX_TEXT_BYTES + 1)).into_bytes(),
                |e| matches!(e, XmlError::TextTooLong { .. }),
            ),
            (b"<?xml version=\"1.0\"?>".to_vec(), |e| {
                matches!(e, XmlError::NoRootElement)
            }),
        ];
        for (body, expected) in cases {
            let error = parse_document(&body).unwrap_err();
            assert!(
                expected(&error),
                "{:?} gave {error:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

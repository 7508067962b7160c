//! Broken and hostile answers: every one is an error, none a panic; and the secret never leaks.

use gatehouse_plugin_api::testkit;
use gatehouse_plugin_api::{ErrorKind, HttpResponse};

use super::*;

fn malformed(body: impl Into<Vec<u8>>) -> String {
    let body = body.into();
    let preview = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    let run = answered(body);
    let error = run.error();
    assert_eq!(
        error.kind,
        ErrorKind::MalformedResponse,
        "{preview}: {error:?}"
    );
    error.message.clone()
}

#[test]
fn bodies_that_are_not_xml() {
    for body in [
        "",
        "   \n\t",
        "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        "{\"payments\": []}",
        "Payments_list",
        "<",
        "<page",
        "\u{feff}",
    ] {
        malformed(body);
    }
}

#[test]
fn unclosed_and_mismatched_tags() {
    for body in [
        "<page><pagename> Payments_list </pagename><payments><payment><amount>1</amount>",
        "<page><payments></payment></payments></page>",
        "<page><payments><payment><amount>1</amount></payment></page>",
        "<page><payments/></page></page>",
        "<page><payments/></page><page/>",
        "<page><payments/></page>trailing text",
        "<page><payments><payment><amount>1</amount</payment></payments></page>",
        "<page><payments><payment a=\"1></payment></payments></page>",
    ] {
        malformed(body);
    }
}

#[test]
fn entities_and_document_types_are_refused() {
    let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<page><payments><payment><comment>&lol9;</comment></payment></payments></page>"#;
    assert!(malformed(billion_laughs).contains("DTD"));
    let external = r#"<?xml version="1.0"?><!DOCTYPE page [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><page><payments><payment><comment>&xxe;</comment></payment></payments></page>"#;
    assert!(malformed(external).contains("DTD"));
    // An entity nobody declared.
    malformed("<page><payments><payment><comment>&lol;</comment></payment></payments></page>");
    malformed("<page><payments><payment><comment>&#xD800;</comment></payment></payments></page>");
    malformed(
        "<page><payments><payment><comment>&#99999999999;</comment></payment></payments></page>",
    );
    // The predefined entities and character references are ordinary text.
    let run = answered(page_xml(&[payment_xml(&[(
        "comment",
        "&lt;b&gt; &#233; &#x41; &quot;&apos;",
    )])]));
    assert!(run.result.is_ok(), "{:?}", run.result);
}

#[test]
fn huge_text_and_huge_bodies() {
    let huge_comment = page_xml(&[payment_xml(&[("comment", &"A".repeat(1024 * 1024))])]);
    assert!(malformed(huge_comment).contains("longer than"));
    let huge_body = format!(
        "<page><payments>{}</payments></page>",
        "<payment/>".repeat(4 * 1024 * 1024)
    );
    assert!(malformed(huge_body).contains("bytes"));
    let many_small_texts = format!(
        "<page><payments><payment><comment>{}</comment></payment></payments></page>",
        "<![CDATA[xx]]>".repeat(40_000)
    );
    assert!(malformed(many_small_texts).contains("longer than"));
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let deep = format!("{}{}", "<page>".repeat(100_000), "</page>".repeat(100_000));
    assert!(malformed(deep).contains("nested"));
}

#[test]
fn wrong_roots() {
    for body in [
        "<payments><payment/></payments>",
        "<pages><payments/></pages>",
        "<Page><payments/></Page>",
        "<?xml version=\"1.0\"?>",
    ] {
        malformed(body);
    }
}

#[test]
fn invalid_utf8_and_other_encodings() {
    let mut latin1 = page_xml(&[payment_xml(&[
        ("user", "Jos"),
        ("amount", "1"),
        ("currency", "EUR"),
    ])])
    .into_bytes();
    let position = latin1
        .windows(3)
        .position(|window| window == b"Jos")
        .unwrap()
        + 3;
    latin1.insert(position, 0xe9); // "José" in ISO-8859-1
    assert!(malformed(latin1).contains("UTF-8"));
    let utf16: Vec<u8> = "\u{feff}<page><payments/></page>"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    malformed(utf16);
    malformed(vec![0xff; 64]);
}

/// Every prefix of a valid answer, and every single-byte corruption of it, ends in a result: a
/// report or a malformed-response error, never a panic (which the testkit would report as a
/// plugin fault).
#[test]
fn truncations_and_corruptions_never_panic() {
    let body = page_xml(&[
        full_payment("John", "10.25", "USD"),
        full_payment("Ann & Co", "7", "EUR"),
    ])
    .into_bytes();
    let mut bodies: Vec<Vec<u8>> = (0..body.len()).map(|end| body[..end].to_vec()).collect();
    for index in 0..body.len() {
        for replacement in [b'<', b'>', b'&', b'/', b'"', 0x00, 0xff, b'!'] {
            let mut corrupted = body.clone();
            corrupted[index] = replacement;
            bodies.push(corrupted);
        }
    }
    for corrupted in bodies {
        let run = answered(corrupted.clone());
        if let Err(error) = &run.result {
            assert!(
                matches!(error.kind, ErrorKind::MalformedResponse),
                "{:?} gave {error:?}",
                String::from_utf8_lossy(&corrupted)
            );
        }
    }
}

#[test]
fn the_secret_never_appears_in_requests_errors_or_outcomes() {
    let get_account = account_with(&[("allow_get", "true")]);
    let mut runs = vec![
        answered(page_xml(&[full_payment("John", "10.25", "USD")])),
        answered(page_xml(&[full_payment("Ann", "10.2555", "XXX")])),
        answered("<page><error>Incorrect hash</error></page>"),
        answered("<page><error>Bad login</error></page>"),
        answered("not xml"),
        run(&report(None, None, &[]), [HttpResponse::new(500, "oops")]),
        run(&report(None, None, &[("amount_min", "x")]), []),
        run(&report(None, None, &[("nope", "1")]), []),
        run(
            &testkit::invocation(report_command(None, None, &[]), get_account),
            [HttpResponse::new(200, page_xml(&[]))],
        ),
    ];
    runs.push(run(
        &testkit::invocation(
            report_command(None, None, &[]),
            account_with(&[("allow_get", "bad")]),
        ),
        [],
    ));
    for run in runs {
        let result = match &run.result {
            Ok(outcome) => serde_json::to_string(outcome).unwrap(),
            Err(error) => serde_json::to_string(error).unwrap(),
        };
        assert!(!result.contains(SECRET), "{result}");
        for request in &run.requests {
            assert!(!request.url.contains(SECRET), "{}", request.url);
            assert!(!String::from_utf8_lossy(&request.body).contains(SECRET));
            assert!(
                request
                    .headers
                    .iter()
                    .all(|(_, value)| !value.contains(SECRET))
            );
        }
    }
}

use crate::files::{
    FilePage, InlineSource, ListQuery, expires_in_seconds, fits_quota, inline_source, list_page,
    next_page_cursor, stored_filename, stored_mime_type,
};

#[test]
fn an_expiry_is_one_hour_to_ninety_days() {
    assert_eq!(expires_in_seconds("3600"), Ok(3_600));
    assert_eq!(expires_in_seconds("7776000"), Ok(7_776_000));
    assert!(expires_in_seconds("3599").is_err());
    assert!(expires_in_seconds("7776001").is_err());
    assert!(expires_in_seconds("an hour").is_err());
}

#[test]
fn a_list_takes_one_cursor_and_a_limit_from_one_to_a_thousand() {
    assert_eq!(list_page(&ListQuery::default()), Ok((FilePage::Newest, 20)));
    let query = ListQuery {
        limit: Some("2"),
        after_id: Some("file_b"),
        ..ListQuery::default()
    };
    assert_eq!(list_page(&query), Ok((FilePage::After("file_b".into()), 2)));
    let query = ListQuery {
        before_id: Some("file_a"),
        ..ListQuery::default()
    };
    assert_eq!(list_page(&query), Ok((FilePage::Before("file_a".into()), 20)));
    for limit in ["0", "1001", "-1", "ten"] {
        let query = ListQuery {
            limit: Some(limit),
            ..ListQuery::default()
        };
        assert!(list_page(&query).is_err(), "limit {limit}");
    }
    let query = ListQuery {
        before_id: Some("file_a"),
        page: Some("page_file_b"),
        ..ListQuery::default()
    };
    assert!(list_page(&query).is_err());
}

#[test]
fn a_page_cursor_continues_after_the_last_file_of_its_page() {
    let cursor = next_page_cursor("file_01abc");
    assert_eq!(cursor, "page_file_01abc");
    let query = ListQuery {
        page: Some(&cursor),
        ..ListQuery::default()
    };
    assert_eq!(list_page(&query), Ok((FilePage::After("file_01abc".into()), 20)));
    for foreign in ["file_01abc", "page_", ""] {
        let query = ListQuery {
            page: Some(foreign),
            ..ListQuery::default()
        };
        assert!(list_page(&query).is_err(), "cursor {foreign:?}");
    }
}

#[test]
fn an_upload_fits_while_the_total_stays_within_the_quota() {
    assert!(fits_quota(0, 100, 100));
    assert!(fits_quota(60, 40, 100));
    assert!(!fits_quota(60, 41, 100));
    assert!(!fits_quota(u64::MAX, 1, u64::MAX));
    assert!(fits_quota(0, 0, 0));
}

#[test]
fn a_file_keeps_the_last_component_of_its_name() {
    assert_eq!(
        stored_filename(Some("report.pdf"), "application/pdf"),
        "report.pdf"
    );
    assert_eq!(
        stored_filename(Some("/tmp/x/report.pdf"), "application/pdf"),
        "report.pdf"
    );
    assert_eq!(
        stored_filename(Some(r"C:\docs\notes.txt"), "text/plain"),
        "notes.txt"
    );
    assert_eq!(stored_filename(None, "application/pdf"), "unnamed.pdf");
    assert_eq!(stored_filename(Some(""), "application/x-thing"), "unnamed");
    assert_eq!(stored_filename(Some(&"a".repeat(600)), "text/plain").len(), 500);
}

#[test]
fn a_generic_or_missing_type_is_named_by_the_extension() {
    assert_eq!(stored_mime_type(Some("image/PNG"), "x.bin"), "image/png");
    assert_eq!(
        stored_mime_type(Some("text/plain; charset=utf-8"), "x"),
        "text/plain"
    );
    assert_eq!(
        stored_mime_type(Some("application/octet-stream"), "doc.pdf"),
        "application/pdf"
    );
    assert_eq!(stored_mime_type(None, "notes.TXT"), "text/plain");
    assert_eq!(stored_mime_type(None, "archive.tar"), "application/octet-stream");
}

#[test]
fn images_and_pdfs_inline_as_base64_and_plain_text_as_text() {
    assert_eq!(inline_source("application/pdf"), InlineSource::Base64);
    assert_eq!(inline_source("image/webp"), InlineSource::Base64);
    assert_eq!(inline_source("text/plain"), InlineSource::Text);
    assert_eq!(inline_source("text/csv"), InlineSource::None);
}

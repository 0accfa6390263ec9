use crate::pagination::{PageRequest, paginate};

fn ids(count: usize) -> Vec<String> {
    (1..=count).map(|n| format!("obj_{n:02}")).collect()
}

fn request(limit: usize, after: Option<&str>, before: Option<&str>) -> PageRequest {
    PageRequest {
        limit,
        after_id: after.map(str::to_owned),
        before_id: before.map(str::to_owned),
    }
}

#[test]
fn forward_pages_chain_through_last_id_until_has_more_is_false() {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = paginate(ids(7), String::clone, &request(3, after.as_deref(), None)).expect("page");
        seen.extend(page.data.clone());
        if !page.has_more {
            break;
        }
        after = page.last_id;
    }
    assert_eq!(seen, ids(7));
}

#[test]
fn backward_pages_end_just_before_the_cursor() {
    let page = paginate(ids(7), String::clone, &request(3, None, Some("obj_05"))).expect("page");
    assert_eq!(page.data, vec!["obj_02", "obj_03", "obj_04"]);
    assert!(page.has_more, "obj_01 is still before");
    assert_eq!(page.first_id.as_deref(), Some("obj_02"));
    let first = paginate(ids(7), String::clone, &request(3, None, Some("obj_02"))).expect("page");
    assert_eq!(first.data, vec!["obj_01"]);
    assert!(!first.has_more);
}

#[test]
fn an_empty_list_has_no_ids_and_no_more() {
    let page = paginate(Vec::<String>::new(), String::clone, &request(20, None, None)).expect("page");
    assert!(page.data.is_empty());
    assert!(!page.has_more);
    assert_eq!(page.first_id, None);
    assert_eq!(page.last_id, None);
}

#[test]
fn a_cursor_outside_the_list_is_refused() {
    let error = paginate(ids(3), String::clone, &request(2, Some("obj_99"), None)).expect_err("unknown");
    assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
}

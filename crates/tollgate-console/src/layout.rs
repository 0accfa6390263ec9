//! The page shell (header, navigation by role, main landmark) and the small formatting
//! helpers every page shares. Amounts are printed as the core's `NanoUsd` prints them.

use maud::{DOCTYPE, Markup, html};
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_service::{Access, ConsoleArea, ConsoleUser};

/// The navigation: path, label, and the area whose view it needs.
const NAVIGATION: [(&str, &str, ConsoleArea); 10] = [
    ("/console/overview", "Overview", ConsoleArea::Overview),
    ("/console/workspaces", "Workspaces", ConsoleArea::Workspaces),
    ("/console/keys", "API keys", ConsoleArea::ApiKeys),
    ("/console/billing", "Billing", ConsoleArea::Billing),
    ("/console/limits", "Limits", ConsoleArea::Limits),
    ("/console/usage", "Usage & cost", ConsoleArea::Usage),
    ("/console/requests", "Requests", ConsoleArea::Usage),
    ("/console/workbench", "Workbench", ConsoleArea::Workbench),
    ("/console/members", "Members", ConsoleArea::Members),
    ("/console/alerts", "Alerts", ConsoleArea::Alerts),
];

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · tollgate Console" }
        link rel="stylesheet" href="/console/assets/console.css";
        script src="/console/assets/console.js" defer {}
    }
}

/// A page of a signed-in person, with the navigation their role reaches.
pub(crate) fn page(user: &ConsoleUser, current: &str, title: &str, content: Markup) -> Markup {
    html! {
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/overview" { "tollgate" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label, area) in NAVIGATION {
                                @if user.may(area, Access::View) {
                                    li {
                                        @if path == current {
                                            a href=(path) aria-current="page" { (label) }
                                        } @else {
                                            a href=(path) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    form.signout method="post" action="/console/sign-out" {
                        (csrf(user))
                        span.who { (user.user.email) " · " (user.role().as_str()) }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A page without navigation: sign-in, setup, errors.
pub(crate) fn bare(title: &str, content: Markup) -> Markup {
    html! {
        html lang="en" {
            head { (head(title)) }
            body.bare {
                main id="main" { (content) }
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub(crate) fn csrf(user: &ConsoleUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.session.csrf_token); }
}

pub(crate) fn instant(at: Timestamp) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(crate) fn optional_instant(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "never".to_owned(), instant)
}

pub(crate) fn day(at: Timestamp) -> String {
    at.format("%Y-%m-%d").to_string()
}

pub(crate) fn optional_usd(amount: Option<NanoUsd>) -> String {
    amount.map_or_else(|| "no limit".to_owned(), |amount| amount.to_string())
}

/// A figure with a label, for the summary cards.
pub(crate) fn stat(label: &str, value: &str, id: &str) -> Markup {
    html! {
        div.stat {
            span.label { (label) }
            span.value id=(id) { (value) }
        }
    }
}

/// A thousands-separated count.
pub(crate) fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

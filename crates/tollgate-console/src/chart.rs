//! Charts as SVG drawn on the server: stacked bars, one bar per time bucket, one colour per
//! series, with a text legend and a `<title>` per segment for screen readers and hover.
//! Heights are integer arithmetic on the values (nano-dollars or tokens): no floats.

use maud::{Markup, html};

/// Colours of the series, in order; the legend repeats them.
const PALETTE: [&str; 8] = [
    "#c15f3c", "#3d6f8e", "#6a8e3d", "#8e3d7a", "#b08a2e", "#3d8e86", "#7a5a3d", "#5a5a8e",
];
const WIDTH: i64 = 720;
const HEIGHT: i64 = 200;
const LABEL_SPACE: i64 = 22;

/// One bar segment: y, height, colour and title.
type Segment = (i64, i64, &'static str, String);

/// One series: its name and a value per bucket.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) values: Vec<i64>,
}

/// A stacked bar chart of `series` over `labels` (one per bucket). `format` prints a value
/// for titles and the scale.
pub(crate) fn stacked_bars(
    caption: &str,
    labels: &[String],
    series: &[Series],
    format: &dyn Fn(i64) -> String,
) -> Markup {
    let totals: Vec<i64> = (0..labels.len())
        .map(|index| {
            series
                .iter()
                .map(|one| one.values.get(index).copied().unwrap_or(0).max(0))
                .fold(0_i64, i64::saturating_add)
        })
        .collect();
    let highest = totals.iter().copied().max().unwrap_or(0);
    let maximum = highest.max(1);
    let count = i64::try_from(labels.len()).unwrap_or(1).max(1);
    let slot = WIDTH / count;
    let bar = (slot * 7 / 10).max(1);
    let plot = HEIGHT - LABEL_SPACE;
    let scale = |value: i64| -> i64 {
        i64::try_from(i128::from(value) * i128::from(plot) / i128::from(maximum)).unwrap_or(plot)
    };
    let label_every = (count / 8).max(1);
    let bars: Vec<(i64, Vec<Segment>)> = labels
        .iter()
        .enumerate()
        .map(|(index, label)| {
            let position = i64::try_from(index).unwrap_or(0);
            let mut top = plot;
            let mut segments = Vec::new();
            for (series_index, one) in series.iter().enumerate() {
                let value = one.values.get(index).copied().unwrap_or(0).max(0);
                let height = scale(value);
                if height > 0 {
                    top -= height;
                    segments.push((
                        top,
                        height,
                        PALETTE[series_index % PALETTE.len()],
                        format!("{label} · {}: {}", one.name, format(value)),
                    ));
                }
            }
            (position, segments)
        })
        .collect();
    html! {
        figure.chart {
            figcaption {
                (caption)
                @if highest > 0 { " — highest bar " (format(highest)) } @else { " — nothing yet" }
            }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(caption) {
                line x1="0" y1=(plot) x2=(WIDTH) y2=(plot) stroke="#999" stroke-width="1" {}
                @for ((position, segments), label) in bars.iter().zip(labels) {
                    @let x = position * slot + (slot - bar) / 2;
                    @for (y, height, colour, title) in segments {
                        rect x=(x) y=(y) width=(bar) height=(height) fill=(colour) {
                            title { (title) }
                        }
                    }
                    @if position % label_every == 0 {
                        text x=(x) y=(HEIGHT - 6) font-size="11" fill="#555" { (label) }
                    }
                }
            }
            @if series.len() > 1 {
                ul.legend {
                    @for (series_index, one) in series.iter().enumerate() {
                        li {
                            svg.swatch width="12" height="12" aria-hidden="true" {
                                rect width="12" height="12" fill=(PALETTE[series_index % PALETTE.len()]) {}
                            }
                            " " (one.name) " — " (format(one.values.iter().copied().fold(0_i64, i64::saturating_add)))
                        }
                    }
                }
            }
        }
    }
}

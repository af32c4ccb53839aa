//! The SVG drawn on the server: an image's hosts by status as one stacked bar, and its
//! drifted hosts per day over the last 14 days. Inline SVG, no script and no `style`
//! attribute (the pages' CSP forbids both): colours come from the stylesheet's classes
//! (`bar`, `axis`, `label`, `s-<status>`, `empty`), with presentation attributes as a
//! fallback. Each bar carries a `<title>` (a tooltip); the chart's `<title>` and `<desc>`
//! give its name and a summary to screen readers.

use crate::fleet::daily::{first_day, DAYS};
use crate::store::DailyRecord;
use maud::{html, Markup};

/// Size of the drift chart: one slot per day, the bars above the baseline, the labels
/// under it.
const CHART_WIDTH: u64 = 140;
const CHART_HEIGHT: u64 = 40;
const SLOT: u64 = CHART_WIDTH / DAYS;
const BAR_WIDTH: u64 = SLOT - 2;
const BAR_TOP: u64 = 1;
const BASELINE: u64 = 28;
const LABEL_Y: u64 = 38;

/// Size of the status bar.
const STATUS_WIDTH: u64 = 120;
const STATUS_HEIGHT: u64 = 12;

/// The chart's accessible name.
pub const DRIFT_TITLE: &str = "Drifted hosts per day, last 14 days";

/// `day` (since the Unix epoch, UTC) as `YYYY-MM-DD` (H. Hinnant's civil date).
pub fn date(day: u64) -> String {
    let z = i64::try_from(day).unwrap_or(i64::MAX / 2).min(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let dom = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{dom:02}")
}

fn hosts(n: u64) -> &'static str {
    if n == 1 {
        "host"
    } else {
        "hosts"
    }
}

/// Height of a bar of `value` when `max` fills the plot (a non-zero value gets at
/// least a pixel).
fn bar_height(value: u64, max: u64) -> u64 {
    let room = BASELINE - BAR_TOP;
    if max == 0 || value == 0 {
        return 0;
    }
    let scaled =
        (u128::from(value.min(max)) * u128::from(room) + u128::from(max) / 2) / u128::from(max);
    (scaled as u64).clamp(1, room)
}

/// Drifted hosts per day for the [`DAYS`] days ending `today` (oldest left), from an
/// image's series (`Daily::series`; a day missing from it is drawn as zero). The
/// largest day fills the height; all zero: the baseline alone.
pub fn drift_chart(series: &[DailyRecord], today: u64) -> Markup {
    let first = first_day(today);
    let days: Vec<(u64, u64)> = (0..DAYS)
        .map(|slot| {
            let day = first + slot;
            let drifted = series
                .iter()
                .filter(|record| record.day == day)
                .map(|record| record.drifted)
                .max()
                .unwrap_or(0);
            (day, drifted)
        })
        .collect();
    let max = days.iter().map(|(_, drifted)| *drifted).max().unwrap_or(0);
    let last = days.last().map_or(today, |(day, _)| *day);
    let current = days.last().map_or(0, |(_, drifted)| *drifted);
    let summary = match days.iter().rev().find(|(_, drifted)| *drifted == max) {
        Some((peak, _)) if max > 0 => format!(
            "{} to {}: at most {max} drifted {} ({}), {current} on the last day.",
            date(first),
            date(last),
            hosts(max),
            date(*peak)
        ),
        _ => format!("{} to {}: no drifted host.", date(first), date(last)),
    };
    html! {
        svg.chart role="img" viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) }
            width=(CHART_WIDTH) height=(CHART_HEIGHT) {
            title { (DRIFT_TITLE) }
            desc { (summary) }
            @for (slot, (day, drifted)) in (0u64..).zip(&days) {
                @let height = bar_height(*drifted, max);
                rect.bar x=(slot * SLOT + 1) y=(BASELINE - height) width=(BAR_WIDTH)
                    height=(height) fill="#cf222e" {
                    title { (date(*day)) ": " (drifted) " drifted " (hosts(*drifted)) }
                }
            }
            line.axis x1="0" y1=(BASELINE) x2=(CHART_WIDTH) y2=(BASELINE)
                stroke="#d0d7de" stroke-width="1" {}
            text.label x="0" y=(LABEL_Y) text-anchor="start" fill="#57606a" font-size="9" {
                (date(first))
            }
            text.label x=(CHART_WIDTH) y=(LABEL_Y) text-anchor="end" fill="#57606a"
                font-size="9" {
                (date(last))
            }
        }
    }
}

/// The fallback colour of a status (the stylesheet's `s-<status>` wins).
fn status_fill(status: &str) -> &'static str {
    match status {
        "clean" => "#2da44e",
        "drifted" => "#cf222e",
        "failing" => "#bf8700",
        _ => "#8c959f",
    }
}

/// Hosts by status as one horizontal stacked bar, each status's width proportional to
/// its count (in the order given); no host: an empty grey bar.
pub fn status_bar(counts: [(&'static str, u64); 4]) -> Markup {
    let total: u128 = counts.iter().map(|(_, n)| u128::from(*n)).sum();
    let summary = counts
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Edges rounded from the running sum: the segments tile the bar without gaps.
    let mut segments = Vec::with_capacity(counts.len());
    let mut sum = 0u128;
    let mut left = 0u64;
    for (status, n) in counts {
        sum += u128::from(n);
        let right = (sum * u128::from(STATUS_WIDTH) + total / 2)
            .checked_div(total)
            .map_or(0, |edge| edge as u64);
        segments.push((status, n, left, right.saturating_sub(left)));
        left = right;
    }
    html! {
        svg.statusbar role="img" viewBox={ "0 0 " (STATUS_WIDTH) " " (STATUS_HEIGHT) }
            width=(STATUS_WIDTH) height=(STATUS_HEIGHT) {
            title { "Hosts by status: " (summary) }
            @if total == 0 {
                rect.empty x="0" y="0" width=(STATUS_WIDTH) height=(STATUS_HEIGHT)
                    fill="#d0d7de" {
                    title { "no hosts" }
                }
            } @else {
                @for (status, n, x, width) in segments {
                    rect class={ "s-" (status) } x=(x) y="0" width=(width)
                        height=(STATUS_HEIGHT) fill=(status_fill(status)) {
                        title { (status) ": " (n) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: u64 = 20_000; // 2024-10-04

    fn day(day: u64, drifted: u64) -> DailyRecord {
        DailyRecord {
            image_id: "img-a".into(),
            day,
            hosts: drifted.saturating_add(1),
            drifted,
            failing: 0,
            stale: 0,
        }
    }

    fn fourteen(values: [u64; 14]) -> Vec<DailyRecord> {
        (0..14u64)
            .zip(values)
            .map(|(slot, drifted)| day(TODAY - 13 + slot, drifted))
            .collect()
    }

    /// The `height` of every bar, in order.
    fn heights(svg: &str) -> Vec<u64> {
        svg.split("<rect class=\"bar\"")
            .skip(1)
            .map(|rest| {
                let at = rest.find(" height=\"").unwrap() + 9;
                rest[at..].split('"').next().unwrap().parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(TODAY), "2024-10-04");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(date(19_783), "2024-03-01");
        assert_eq!(date(10_957), "2000-01-01");
        assert!(!date(u64::MAX).is_empty());
    }

    #[test]
    fn the_drift_chart_has_fourteen_titled_bars_scaled_to_the_largest_day() {
        let svg = drift_chart(
            &fourteen([0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 5]),
            TODAY,
        )
        .into_string();
        assert!(svg.starts_with("<svg class=\"chart\" role=\"img\" viewBox=\"0 0 140 40\""));
        assert!(svg.contains("<title>Drifted hosts per day, last 14 days</title>"));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 14);
        // The chart's title and one per bar.
        assert_eq!(svg.matches("<title>").count(), 15);
        assert!(svg.contains("<title>2024-10-03: 10 drifted hosts</title>"));
        assert!(svg.contains("<title>2024-10-04: 5 drifted hosts</title>"));
        assert!(svg.contains("<title>2024-09-22: 1 drifted host</title>"));
        assert!(svg.contains("<title>2024-09-21: 0 drifted hosts</title>"));
        let heights = heights(&svg);
        assert_eq!(heights[12], BASELINE - BAR_TOP);
        assert_eq!(heights[13], 14);
        assert_eq!(heights[0], 0);
        assert_eq!(heights[1], 3);
        // Labels: the first and the last day.
        assert!(svg.contains(">2024-09-21</text>"));
        assert!(svg.contains(">2024-10-04</text>"));
        assert!(svg.contains("class=\"axis\""));
        assert!(svg.contains(
            "<desc>2024-09-21 to 2024-10-04: at most 10 drifted hosts (2024-10-03), 5 on the \
             last day.</desc>"
        ));
        assert!(!svg.contains("style"));
        assert!(!svg.contains("script"));
    }

    #[test]
    fn no_drift_is_an_empty_baseline_and_missing_days_are_zero() {
        let svg = drift_chart(&[], TODAY).into_string();
        assert_eq!(heights(&svg), vec![0; 14]);
        assert!(svg.contains("<line class=\"axis\""));
        assert!(svg.contains("no drifted host."));
        // Days out of order or missing: drawn by their day; outside the window: ignored.
        let svg = drift_chart(
            &[day(TODAY, 4), day(TODAY - 13, 2), day(TODAY - 14, 99)],
            TODAY,
        )
        .into_string();
        let heights = heights(&svg);
        assert_eq!(heights.len(), 14);
        assert_eq!(heights[13], BASELINE - BAR_TOP);
        assert_eq!(heights[0], 14);
        assert!(heights[1..13].iter().all(|height| *height == 0));
        assert!(!svg.contains("99"));
    }

    #[test]
    fn a_small_day_next_to_a_huge_one_stays_visible() {
        let mut values = [0; 14];
        values[0] = 1;
        values[13] = u64::MAX;
        let heights = heights(&drift_chart(&fourteen(values), TODAY).into_string());
        assert_eq!(heights[0], 1);
        assert_eq!(heights[13], BASELINE - BAR_TOP);
    }

    #[test]
    fn the_status_bar_is_proportional_and_titled() {
        let svg =
            status_bar([("clean", 6), ("drifted", 3), ("failing", 0), ("stale", 3)]).into_string();
        assert!(svg.starts_with("<svg class=\"statusbar\" role=\"img\""));
        assert!(svg.contains("<title>Hosts by status: clean 6, drifted 3, failing 0, stale 3"));
        assert!(svg.contains(
            "<rect class=\"s-clean\" x=\"0\" y=\"0\" width=\"60\" height=\"12\" \
             fill=\"#2da44e\"><title>clean: 6</title></rect>"
        ));
        assert!(
            svg.contains("<rect class=\"s-drifted\" x=\"60\" y=\"0\" width=\"30\" height=\"12\"")
        );
        assert!(svg.contains("<title>drifted: 3</title>"));
        assert!(svg.contains("class=\"s-failing\" x=\"90\" y=\"0\" width=\"0\""));
        assert!(svg.contains("class=\"s-stale\" x=\"90\" y=\"0\" width=\"30\""));
        assert!(!svg.contains("class=\"empty\""));
        assert!(!svg.contains("style"));
        // Rounded edges still tile the whole width.
        let svg =
            status_bar([("clean", 1), ("drifted", 1), ("failing", 1), ("stale", 0)]).into_string();
        assert!(svg.contains("class=\"s-clean\" x=\"0\" y=\"0\" width=\"40\""));
        assert!(svg.contains("class=\"s-failing\" x=\"80\" y=\"0\" width=\"40\""));
    }

    #[test]
    fn no_host_is_an_empty_grey_bar() {
        let svg =
            status_bar([("clean", 0), ("drifted", 0), ("failing", 0), ("stale", 0)]).into_string();
        assert!(svg.contains("<rect class=\"empty\" x=\"0\" y=\"0\" width=\"120\""));
        assert!(svg.contains("<title>no hosts</title>"));
        assert!(!svg.contains("s-clean"));
        assert!(!svg.contains("style"));
    }

    #[test]
    fn text_is_escaped() {
        let svg =
            status_bar([("<b>&\"", 1), ("drifted", 0), ("failing", 0), ("stale", 0)]).into_string();
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("<title>&lt;b&gt;&amp;&quot;: 1</title>"));
        assert!(svg.contains("class=\"s-&lt;b&gt;&amp;&quot;\""));
    }
}

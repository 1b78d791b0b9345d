//! `report.html`: the run's table and charts on one page, with the SVGs
//! inlined so it reads offline.

use super::files::RunJson;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

pub fn render(run: &RunJson, charts: &[(String, String)], chart_note: Option<&str>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sluice-bench: {}</title><style>\
body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:13px}}\
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}td.l{{text-align:left}}\
.chart{{margin:1em 0}}</style></head><body>",
        esc(&run.workload_name)
    );
    let env = &run.environment;
    let _ = write!(
        h,
        "<h1>{}</h1><p>Started {} · target {} · {} cores · {} · kernel {} · commit {}{}</p>",
        esc(&run.workload_name),
        esc(&run.started_utc),
        esc(&env.target),
        env.cores,
        esc(env.cpu_model.as_deref().unwrap_or("unknown CPU")),
        esc(env.kernel.as_deref().unwrap_or("?")),
        esc(env.git_commit.as_deref().unwrap_or("?")),
        if run.interrupted {
            " · <b>interrupted</b>"
        } else {
            ""
        }
    );
    h.push_str("<h2>Points</h2><table><tr><th>#</th><th>settings</th><th>run</th><th>target msg/s</th><th>publish msg/s</th><th>MB/s</th><th>consume msg/s</th>\
<th>publish p50 ms</th><th>p99</th><th>p99.9</th><th>max</th><th>e2e p50 ms</th><th>e2e p99</th><th>delay p99 ms</th><th>errors</th></tr>");
    for p in &run.points {
        let target = match (p.target_rate, p.max_rate_found) {
            (_, Some(r)) => format!("max → {r:.0}"),
            (t, None) => format!("{t:.0}"),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.index,
            esc(&p.label),
            p.repeat + 1,
            target,
            p.publish_rate_msgs,
            p.publish_rate_mb,
            p.consume_rate_msgs,
            ms(p.publish_latency.p50_us),
            ms(p.publish_latency.p99_us),
            ms(p.publish_latency.p99_9_us),
            ms(p.publish_latency.max_us),
            ms(p.end_to_end.p50_us),
            ms(p.end_to_end.p99_us),
            ms(p.publish_delay.p99_us),
            p.errors
        );
    }
    h.push_str("</table>");
    h.push_str("<p>Publish latency runs from each message's intended send time to its acknowledgement (open loop, so stalls are not hidden); publish delay is how late the send itself was; end-to-end runs from the create timestamp to consumption. Files: run.json, per point .hgrm and .hlog.</p>");
    h.push_str("<h2>Charts</h2>");
    if let Some(n) = chart_note {
        let _ = write!(h, "<p>{}</p>", esc(n));
    }
    for (_, svg) in charts {
        let _ = write!(h, "<div class=chart>{svg}</div>");
    }
    h.push_str("</body></html>\n");
    h
}

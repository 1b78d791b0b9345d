//! `report.html`: the run's table and interactive charts on one page,
//! drawn inline (`plot.rs`) so it reads offline.

use super::charts::{self, Chart};
use super::files::RunJson;
use super::plot;
use super::terminal;
use std::fmt::Write;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

/// The page; `chart_note` says why the chart files (SVG, PNG) were not
/// written, if they were not.
pub fn render(run: &RunJson, charts: &[Chart], chart_note: Option<&str>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sluice-bench: {}</title><style>\
body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:13px}}\
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}td.l{{text-align:left}}\
{}</style></head><body>",
        esc(&run.workload_name),
        plot::STYLE
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
    let _ = write!(
        h,
        "<p>Broker {} · {} · clients {}</p>",
        esc(env
            .broker_version
            .as_deref()
            .unwrap_or("not named (--target-name)")),
        esc(env
            .broker_protocol
            .as_deref()
            .unwrap_or("protocol not recorded")),
        esc(&if env.security.is_empty() {
            "not recorded".to_string()
        } else {
            env.security.join(", ")
        }),
    );
    for w in &run.warnings {
        let _ = write!(h, "<p><b>warning</b>: {}</p>", esc(w));
    }
    h.push_str("<h2>Points</h2><table><tr><th>#</th><th>settings</th><th>run</th><th>target msg/s</th><th>publish msg/s</th><th>MB/s</th><th>consume msg/s</th>\
<th>publish p50 ms</th><th>p99</th><th>p99.9</th><th>max</th><th>e2e p50 ms</th><th>e2e p99</th><th>delay p99 ms</th><th>failed</th><th>error rate</th><th>unsent</th><th>unconsumed</th><th>sustained</th></tr>");
    for p in &run.points {
        let target = match (p.target_rate, p.max_rate_found, p.rate_steps.last()) {
            (_, Some(r), _) => format!("max → {r:.0}"),
            (_, None, _) if p.max_rate_confirmed == Some(false) => {
                "max → none confirmed".to_string()
            }
            (t, None, Some(last)) => format!(
                "ramp {:.0} → {:.0} (mean {t:.0})",
                p.rate_steps[0].rate, last.rate
            ),
            (t, None, None) => format!("{t:.0}"),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}%</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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
            p.errors,
            p.error_rate * 100.0,
            p.unsent,
            p.unconsumed,
            match &p.sustain {
                None => "n/a",
                Some(s) if s.sustained => "yes",
                Some(_) => "<b>no</b>",
            }
        );
    }
    h.push_str("</table>");
    for p in &run.points {
        let mut notes = Vec::new();
        if let Some(s) = p.sustain.as_ref().filter(|s| !s.sustained) {
            notes.push(format!(
                "<b>not sustained</b>: {}",
                esc(&s.why_not.join("; "))
            ));
        }
        if let Some(t) = &p.transactions {
            notes.push(format!(
                "transactional, {} messages per transaction: {} committed ({:.1}/s), {} aborted; EndTxn p50 {} ms, p99 {} ms; first message to commit p50 {} ms, p99 {} ms; publish and end-to-end latency run to the commit",
                t.messages_per_transaction,
                t.committed,
                t.rate_per_s,
                t.aborted,
                ms(t.commit_latency.p50_us),
                ms(t.commit_latency.p99_us),
                ms(t.begin_to_commit.p50_us),
                ms(t.begin_to_commit.p99_us),
            ));
        }
        if let Some(d) = &p.disk_sync {
            notes.push(format!(
                "bare fdatasync of {} B in {}, measured before and after the load: p50 {} ms, p99 {} ms, p99.9 {} ms ({} syncs); publish p99 is {:.1}x its p99",
                d.write_bytes,
                esc(&d.dir),
                ms(d.latency.p50_us),
                ms(d.latency.p99_us),
                ms(d.latency.p99_9_us),
                d.latency.count,
                p.publish_latency.p99_us as f64 / d.latency.p99_us.max(1) as f64
            ));
        }
        if !p.errors_by_cause.is_empty() {
            let causes: Vec<String> = p
                .errors_by_cause
                .iter()
                .map(|(c, n)| format!("{n} {}", esc(c)))
                .collect();
            notes.push(format!("failed messages by cause: {}", causes.join("; ")));
        }
        if let Some(story) = terminal::max_rate_story(p) {
            notes.push(match p.max_rate_confirmed {
                Some(false) => format!("<b>{}</b>", esc(&story)),
                _ => esc(&story),
            });
        }
        if !notes.is_empty() {
            let _ = write!(
                h,
                "<p>Point {} run {}: {}</p>",
                p.index,
                p.repeat + 1,
                notes.join(". ")
            );
        }
    }
    h.push_str("<h2>Cost</h2><table><tr><th>#</th><th>run</th><th>process</th><th>CPU s warm-up</th><th>CPU s measured (user + sys)</th><th>CPU s drain</th><th>peak RSS MiB</th><th>client CPU s/GB</th><th>broker CPU s/GB</th><th>client CPU s/M msgs</th><th>broker CPU s/M msgs</th></tr>");
    let fig = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    for p in &run.points {
        let Some(cpu) = &p.cpu else { continue };
        for (i, proc_) in cpu.processes.iter().enumerate() {
            let per_point = if i == 0 {
                format!(
                    "<td rowspan={n}>{}</td><td rowspan={n}>{}</td><td rowspan={n}>{}</td><td rowspan={n}>{}</td>",
                    fig(cpu.client_cpu_s_per_gb),
                    fig(cpu.broker_cpu_s_per_gb),
                    fig(cpu.client_cpu_s_per_million_msgs),
                    fig(cpu.broker_cpu_s_per_million_msgs),
                    n = cpu.processes.len()
                )
            } else {
                String::new()
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=l>{}</td><td>{:.2}</td><td>{:.2} + {:.2}</td><td>{:.2}</td><td>{}</td>{per_point}</tr>",
                p.index,
                p.repeat + 1,
                esc(&proc_.name),
                proc_.warmup.total(),
                proc_.measure.user_s,
                proc_.measure.system_s,
                proc_.drain.total(),
                proc_.peak_rss_mib.map_or("n/a".to_string(), |m| format!("{m:.0}")),
            );
        }
    }
    h.push_str("</table><p>CPU seconds from /proc for the harness and each broker process on this host; per GB and per million messages published in the measured window. With the broker inside the harness process, the client is its load-generator and consumer threads and the broker the rest.</p>");
    let e2e_start = run
        .points
        .first()
        .map_or("the intended send time in the value", |p| {
            p.end_to_end_start.as_str()
        });
    let _ = write!(
        h,
        "<p>Publish latency runs from each message's intended send time to its acknowledgement \
(open loop, so stalls are not hidden); messages of the window never sent enter it at the time \
from their intended send to the end of the run, a lower bound. Publish delay is how late the \
send itself was. End-to-end latency runs from {} to the moment the consumer has decoded the \
record; acknowledged messages never consumed enter it at the drain's length, a lower bound. \
Rates count acknowledgements and consumption inside the measured window. Latency histograms \
hold successful messages only: failed ones are counted beside them. A point is sustained when \
over its window the producers' lag, publish p99 and the consumers' backlog did not grow and \
nothing went unsent or failed. Files: run.json, per point .hgrm and .hlog (ns).</p>",
        esc(e2e_start)
    );
    h.push_str("<h2>Charts</h2><p>Hover a chart for a point's exact value; click a legend entry to hide or show its series.</p>");
    if let Some(n) = chart_note {
        let _ = write!(h, "<p>Chart files: {}</p>", esc(n));
    }
    for c in charts {
        h.push_str(&plot::render(&charts::interactive(c)));
    }
    let _ = writeln!(h, "<script>{}</script></body></html>", plot::SCRIPT);
    h
}

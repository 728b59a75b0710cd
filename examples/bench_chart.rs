//! Draws `scripts/bench.sh`'s results as an SVG: one horizontal bar per server for each
//! (scenario, client), requests/s on a log axis with the value at the end of each bar,
//! and, when present, a second panel with server memory per idle connection.
//!
//! ```sh
//! cargo run --release --features tokio --example bench_chart -- target/bench/results.json target/bench/results.svg
//! ```
//!
//! The input is the `results.json` that `scripts/bench.py` writes (`rows`, `memory`);
//! a tiny JSON reader is included so the example needs no JSON crate.

use std::collections::BTreeMap;
use std::error::Error;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

// ---- a minimal JSON reader ------------------------------------------------------------

#[derive(Debug, Clone)]
#[allow(dead_code)] // the reader keeps every value, the chart reads some
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Json::Str(s)) => Some(s),
            _ => None,
        }
    }
    fn num(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Json::Num(n)) => Some(*n),
            _ => None,
        }
    }
    fn arr(&self, key: &str) -> &[Json] {
        match self.get(key) {
            Some(Json::Arr(v)) => v,
            _ => &[],
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit:?} at byte {}", self.i))
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err("unexpected end of input".into());
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value()? else {
                        return Err(format!("object key expected at byte {}", self.i));
                    };
                    self.ws();
                    self.eat(":")?;
                    let v = self.value()?;
                    m.insert(k, v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("',' or '}}' expected at byte {}", self.i)),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return Err(format!("',' or ']' expected at byte {}", self.i)),
                    }
                }
            }
            b'"' => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let Some(&c) = self.s.get(self.i) else {
                        return Err("unterminated string".into());
                    };
                    self.i += 1;
                    match c {
                        b'"' => return Ok(Json::Str(out)),
                        b'\\' => {
                            let e = *self.s.get(self.i).ok_or("bad escape")?;
                            self.i += 1;
                            match e {
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'r' => out.push('\r'),
                                b'b' => out.push('\u{8}'),
                                b'f' => out.push('\u{c}'),
                                b'u' => {
                                    let hex = self.s.get(self.i..self.i + 4).ok_or("bad \\u")?;
                                    let code = u32::from_str_radix(
                                        std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                        16,
                                    )
                                    .map_err(|e| e.to_string())?;
                                    self.i += 4;
                                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                                }
                                other => out.push(other as char),
                            }
                        }
                        _ => {
                            // Copy a whole UTF-8 sequence.
                            let start = self.i - 1;
                            let mut end = self.i;
                            while end < self.s.len() && (self.s[end] & 0xC0) == 0x80 {
                                end += 1;
                            }
                            out.push_str(&String::from_utf8_lossy(&self.s[start..end]));
                            self.i = end;
                        }
                    }
                }
            }
            b't' => self.eat("true").map(|_| Json::Bool(true)),
            b'f' => self.eat("false").map(|_| Json::Bool(false)),
            b'n' => self.eat("null").map(|_| Json::Null),
            b'N' => self.eat("NaN").map(|_| Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                text.parse()
                    .map(Json::Num)
                    .map_err(|_| format!("bad value at byte {start}: {text:?}"))
            }
        }
    }
}

fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing input at byte {}", p.i));
    }
    Ok(v)
}

// ---- the chart ------------------------------------------------------------------------

/// 1234567 -> "1.23M", 45678 -> "45.7k".
fn si(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{unit}")
}

/// A fixed colour per server kind, so every chart reads the same way.
fn colour(server: &str) -> RGBColor {
    let s = server.to_ascii_lowercase();
    if s.starts_with("reactor") {
        RGBColor(31, 119, 180)
    } else if s.starts_with("std") {
        RGBColor(255, 127, 14)
    } else if s.starts_with("tokio") {
        RGBColor(44, 160, 44)
    } else if s.starts_with("nginx") {
        RGBColor(148, 103, 189)
    } else if s.starts_with("redis") {
        RGBColor(214, 39, 40)
    } else {
        RGBColor(127, 127, 127)
    }
}

/// One category: its label and (server, value) bars.
type Group = (String, Vec<(String, f64)>);

const BAR: f64 = 1.0; // bar height in y units
const GAP: f64 = 0.9; // space between categories

/// Height in y units of a list of groups.
fn span(groups: &[Group]) -> f64 {
    groups.iter().map(|(_, b)| b.len() as f64 * BAR + GAP).sum::<f64>() + GAP
}

/// Draws one panel of grouped horizontal bars on a log x axis.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    groups: &[Group],
    servers: &[String],
    legend: bool,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let values = groups.iter().flat_map(|(_, b)| b.iter().map(|&(_, v)| v));
    let (min, max) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = 10f64.powf((min.max(1.0) / 1.5).log10().floor());
    let hi = 10f64.powf((max * 3.0).log10().ceil());
    let total = span(groups);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(46)
        .y_label_area_size(330)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..total)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .y_label_formatter(&|_| String::new())
        .x_desc(x_desc)
        .x_label_formatter(&|v| si(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()?;

    // Bar positions: top to bottom, in the order of the input.
    let mut placed: Vec<(usize, f64, f64)> = Vec::new(); // (group, y top, y centre)
    let mut bars: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new(); // server -> (top, bottom, value)
    let mut y = total - GAP;
    for (gi, (_, b)) in groups.iter().enumerate() {
        let top = y;
        for (server, v) in b {
            bars.entry(server.as_str()).or_default().push((y, y - BAR * 0.92, *v));
            y -= BAR;
        }
        placed.push((gi, top, (top + y) / 2.0));
        y -= GAP;
    }
    for server in servers {
        let Some(list) = bars.get(server.as_str()) else { continue };
        let c = colour(server);
        chart
            .draw_series(
                list.iter().map(|&(t, b, v)| Rectangle::new([(lo, t), (v, b)], c.filled())),
            )?
            .label(server.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        let value_style =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series(list.iter().map(|&(t, b, v)| {
            Text::new(format!(" {}", si(v)), (v, (t + b) / 2.0), value_style.clone())
        }))?;
    }
    // Category labels, right-aligned against the axis; a rule between categories.
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for &(gi, top, centre) in &placed {
        // backend_coord is absolute; `area` draws relative to its own corner
        let (px, py) = chart.backend_coord(&(lo, centre));
        let (bx, by) = area.get_base_pixel();
        area.draw(&Text::new(groups[gi].0.clone(), (px - bx - 10, py - by), label_style.clone()))?;
        if gi > 0 {
            let ry = top + GAP / 2.0;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(lo, ry), (hi, ry)],
                RGBColor(210, 210, 210),
            )))?;
        }
    }
    if !legend {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: bench_chart RESULTS.json OUT.svg");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
    let doc = parse_json(&text).map_err(|e| format!("{input}: {e}"))?;
    // Older results.json files were a bare list of rows.
    let rows: &[Json] = match &doc {
        Json::Arr(v) => v,
        _ => doc.arr("rows"),
    };

    let mut groups: Vec<Group> = Vec::new();
    let mut servers: Vec<String> = Vec::new();
    for r in rows {
        if r.str("status").is_some_and(|s| s != "ok") {
            continue;
        }
        let (Some(scenario), Some(rps)) = (r.str("scenario"), r.num("rps")) else { continue };
        if rps <= 0.0 {
            continue;
        }
        let server = r.str("server").unwrap_or("?").to_string();
        let label = match r.str("client") {
            Some(c) => format!("{scenario} · {c}"),
            None => scenario.to_string(),
        };
        if !servers.contains(&server) {
            servers.push(server.clone());
        }
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, b)) => b.push((server, rps)),
            None => groups.push((label, vec![(server, rps)])),
        }
    }
    let mut mem: Vec<Group> = Vec::new();
    let mut mem_servers: Vec<String> = Vec::new();
    for m in doc.arr("memory") {
        let (Some(server), Some(b)) = (m.str("server"), m.num("bytes_per_conn")) else { continue };
        if b <= 0.0 {
            continue;
        }
        let n = m.num("connections").unwrap_or(0.0);
        mem.push((format!("{n:.0} idle connections · {server}"), vec![(server.to_string(), b)]));
        if !mem_servers.iter().any(|s| s == server) {
            mem_servers.push(server.to_string());
        }
    }
    if groups.is_empty() && mem.is_empty() {
        return Err(format!("{input}: no successful rows to draw").into());
    }

    let px_per_unit = 20.0;
    let chrome = 130.0; // caption, axis and margins of a panel
    let top_h = if groups.is_empty() { 0 } else { (span(&groups) * px_per_unit + chrome) as u32 };
    let mem_h =
        if mem.is_empty() { 0 } else { (span(&mem) * px_per_unit + chrome).max(230.0) as u32 };
    let root = SVGBackend::new(output, (1300, top_h + mem_h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(top_h);
    if !groups.is_empty() {
        panel(
            &upper,
            "evloop benchmarks: requests/s by scenario and client (server on 1 CPU)",
            "requests/s (log scale; higher is better)",
            &groups,
            &servers,
            true,
        )?;
    }
    if !mem.is_empty() {
        panel(
            &lower,
            "server memory per idle connection",
            "bytes of RSS per connection (log scale; lower is better)",
            &mem,
            &mem_servers,
            false, // each label names its server
        )?;
    }
    root.present()?;
    eprintln!("bench_chart: wrote {output} ({} scenario groups)", groups.len());
    Ok(())
}

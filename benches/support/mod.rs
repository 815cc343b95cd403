//! Shared by the benches: criterion settings, reading medians back, and printing ratios.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;

/// Where criterion writes its estimates; read back to compute ratios in the same run.
pub fn output_directory() -> PathBuf {
    std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Short but stable settings: the whole `cargo bench` stays within a few minutes on 2 cores.
pub fn criterion() -> Criterion {
    Criterion::default()
        .output_directory(&output_directory())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .without_plots()
        .configure_from_args()
}

/// The median time per iteration criterion measured for `group/function`, in nanoseconds.
pub fn median_ns(group: &str, function: &str) -> Option<f64> {
    let path = output_directory()
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// One row of the ratio report.
pub struct Row {
    pub name: &'static str,
    pub ratio: f64,
    pub unit: &'static str,
    pub goal: &'static str,
    pub met: bool,
}

/// Print the ratio table the README and benches/README.md quote.
pub fn report(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("{:<62} {:>10}  {:<14} met", "benchmark", "ratio", "goal");
    for row in rows {
        println!(
            "{:<62} {:>9.3}{} {:<14} {}",
            row.name,
            row.ratio,
            row.unit,
            row.goal,
            if row.met { "yes" } else { "NO" }
        );
    }
}

/// `subject` relative to `baseline`, both medians of the same run; `None` if either is missing
/// (a filtered run).
pub fn ratio(group: &str, subject: &str, baseline: &str) -> Option<f64> {
    Some(median_ns(group, subject)? / median_ns(group, baseline)?)
}

impl Row {
    /// A row printed for comparison only, with no goal of its own.
    pub fn reference(name: &'static str, ratio: f64) -> Row {
        Row {
            name,
            ratio,
            unit: "x",
            goal: "-",
            met: true,
        }
    }
}

/// True when the bench was given a name filter: only the criterion groups run then, not the
/// paired measurements.
pub fn filtered() -> bool {
    std::env::args().skip(1).any(|arg| !arg.starts_with('-'))
}

/// Runs `a` and `b` once per round, alternating which goes first so that drift in the machine
/// hits both alike; each round's `(a, b)`. On a VM whose speed drifts by tens of percent over
/// a minute, this is steadier than two criterion medians taken a minute apart.
pub fn alternate<T>(
    rounds: usize,
    mut a: impl FnMut() -> T,
    mut b: impl FnMut() -> T,
) -> Vec<(T, T)> {
    (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let a = a();
                (a, b())
            } else {
                let b = b();
                (a(), b)
            }
        })
        .collect()
}

/// The round whose `ratio` is the median.
pub fn median_round<T>(mut rounds: Vec<T>, ratio: impl Fn(&T) -> f64) -> T {
    rounds.sort_by(|x, y| ratio(x).total_cmp(&ratio(y)));
    let middle = rounds.len() / 2;
    rounds.swap_remove(middle)
}

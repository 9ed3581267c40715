//! Fuzzing the experiment spec parser, which reads text from anyone holding the cluster token
//! (`SubmitExperiment`): arbitrary text, valid specs mutated line by line and value by value,
//! and inline genomes with extreme numbers must never panic; whatever is accepted must be
//! fully valid (seeds resolve, genomes analyse, the spec round-trips).

use explore_common::spec::ExperimentSpec;
use explore_common::Genome;
use proptest::prelude::*;

const MINIMAL: &str = "name = \"fuzz\"\n[budget]\nmax_trials = 4\n";

const FULL: &str = r#"
name = "full"
seed = 7

[budget]
max_trials = 12
max_wall_seconds = 600
max_failures = 3

[data]
dataset = "fashion-mnist"
train_subset = 1500
test_subset = 300
validation_fraction = 0.2

[annealing]
initial_temperature = 0.05
cooling = "linear"
cooling_rate = 0.9
min_temperature = 0.001

[search]
max_params = 2000000
max_flops = 0
max_blocks = 24
channels = [8, 16, 32]
dense_units = [32, 64]
learning_rate = [0.0003, 0.01]
batch_sizes = [64, 128]
epochs = [1, 3]
optimizers = ["adamw", "sgd"]
schedules = ["one_cycle", "constant"]
weight_decay = [0.0, 0.001]
architecture_mutation_probability = 0.5

[[seeds]]
preset = "cnn2"
hparams = { optimizer = "adamw", learning_rate = 0.003, schedule = "one_cycle", batch_size = 64, weight_decay = 0.0001, epochs = 2 }

[[seeds]]
preset = "mlp"
"#;

const INLINE_GENOME: &str = r#"
name = "inline"
[budget]
max_trials = 5
[[seeds]]
genome = { input = { channels = 1, height = 28, width = 28 }, num_classes = 10, blocks = [
  { type = "conv", out_channels = 16, kernel = 3, stride = 1 },
  { type = "batch_norm" },
  { type = "activation", kind = "relu" },
  { type = "residual", body = [ { type = "conv", out_channels = 16, kernel = 3, stride = 1 }, { type = "activation", kind = "gelu" } ] },
  { type = "pool", kind = "max", size = 2 },
  { type = "dropout", rate = 0.25 },
  { type = "global_avg_pool" },
  { type = "dense", units = 32 },
] }
"#;

/// Numbers at and beyond every boundary the spec and TOML have.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "99",
    "100001",
    "65537",
    "1001",
    "4097",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e308",
    "1e309",
    "-1e308",
    "5e-324",
    "-0.0",
    "0.95",
    "nan",
    "inf",
    "-inf",
    "0x7fffffff",
    "1_000_000",
];

/// Other things a value or a line can become.
const SNIPPETS: &[&str] = &[
    "\"\"",
    "\"x\"",
    "[]",
    "[1, 2, 3]",
    "[[1]]",
    "{}",
    "{ a = 1 }",
    "true",
    "1979-05-27T07:32:00Z",
    "\"fashion-mnist\"",
    "\"idx\"",
    "\"../../etc/passwd\"",
    "'''\nmulti\n'''",
    "[seeds]",
    "[[seeds]]",
    "[budget]",
    "preset = \"resnet_small\"",
    "genome_file = \"/nonexistent/genome.json\"",
    "genome = { input = { channels = 0, height = 0, width = 0 }, num_classes = 1, blocks = [] }",
    "blocks = [ { type = \"residual\", body = [ { type = \"residual\", body = [ { type = \"residual\", body = [ { type = \"residual\", body = [ { type = \"batch_norm\" } ] } ] } ] } ] } ]",
    "max_trials = 100000",
    "\u{0}",
    "\u{feff}",
    "é",
    "=",
    "#",
];

/// One edit of a spec's text.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Replaces the n-th number in the text.
    ReplaceNumber(usize, &'static str),
    /// Replaces the value after `=` on a line.
    ReplaceValue(usize, &'static str),
    InsertLine(usize, String),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippet = prop_oneof![
        proptest::sample::select(SNIPPETS).prop_map(str::to_string),
        "[a-z_]{1,12} = [0-9a-z\\\"\\[\\]{}., =-]{0,20}",
        any::<String>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), proptest::sample::select(NUMBERS))
            .prop_map(|(i, n)| Edit::ReplaceNumber(i, n)),
        (
            any::<usize>(),
            proptest::sample::select([NUMBERS, SNIPPETS].concat())
        )
            .prop_map(|(i, v)| Edit::ReplaceValue(i, v)),
        (any::<usize>(), snippet).prop_map(|(i, s)| Edit::InsertLine(i, s)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match edit {
        Edit::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
        }
        Edit::DuplicateLine(i) => {
            if !lines.is_empty() {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
        }
        Edit::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
        }
        Edit::ReplaceNumber(k, value) => {
            let joined = lines.join("\n");
            let spans = number_spans(&joined);
            if spans.is_empty() {
                return joined;
            }
            let (start, end) = spans[k % spans.len()];
            return format!("{}{value}{}", &joined[..start], &joined[end..]);
        }
        Edit::ReplaceValue(i, value) => {
            if !lines.is_empty() {
                let line = &mut lines[i % n];
                if let Some(eq) = line.find('=') {
                    line.truncate(eq + 1);
                    line.push(' ');
                    line.push_str(value);
                }
            }
        }
        Edit::InsertLine(i, s) => lines.insert(i % (lines.len() + 1), s.clone()),
        Edit::Truncate(i) => {
            let joined = lines.join("\n");
            let mut cut = i % (joined.len() + 1);
            while !joined.is_char_boundary(cut) {
                cut -= 1;
            }
            return joined[..cut].to_string();
        }
    }
    lines.join("\n")
}

/// Byte spans of the decimal numbers in `text`.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

/// Parses `text`; an accepted spec must be valid through and through.
fn check(text: &str) {
    match ExperimentSpec::from_toml(text) {
        Ok(spec) => {
            spec.validate().expect("an accepted spec validates again");
            let seeds = spec
                .resolve_seeds(None)
                .expect("an accepted spec's seeds resolve");
            assert!(!seeds.is_empty());
            for seed in &seeds {
                let analysis = seed.genome.analyze().expect("an accepted seed analyses");
                assert!(analysis.params > 0);
                seed.hparams.validate().expect("accepted hyperparameters");
                let back = Genome::from_json(&seed.genome.canonical_json())
                    .expect("a seed genome round-trips through JSON");
                assert_eq!(back, seed.genome);
            }
            let json = serde_json::to_string(&spec).expect("a spec serialises");
            let again: ExperimentSpec = serde_json::from_str(&json).expect("and deserialises");
            assert_eq!(again.budget, spec.budget);
        }
        Err(e) => assert!(!e.to_string().is_empty(), "errors say something"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn toml_shaped_text_never_panics(
        text in "([a-z_\\[\\]]{1,16}( = ([0-9.e+-]{1,8}|\"[a-z-]{0,8}\"|\\[[0-9, ]{0,12}\\]|\\{[a-z =0-9,]{0,20}\\}))?\n){0,12}"
    ) {
        check(&text);
        check(&format!("{MINIMAL}{text}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_never_panic(
        base in proptest::sample::select(vec![MINIMAL, FULL, INLINE_GENOME]),
        edits in proptest::collection::vec(edit(), 1..5),
    ) {
        // The base is valid; every edit may or may not break it.
        prop_assert!(ExperimentSpec::from_toml(base).is_ok());
        let mut text = base.to_string();
        for e in &edits {
            text = apply(&text, e);
        }
        check(&text);
    }
}

/// An inline genome block with any numbers, as TOML.
fn block(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(o, k, s)| format!(
            "{{ type = \"conv\", out_channels = {o}, kernel = {k}, stride = {s} }}"
        )),
        (
            0u32..5000,
            prop_oneof![Just(1u32), Just(3), Just(5), Just(11), any::<u32>()],
            1u32..5
        )
            .prop_map(|(o, k, s)| format!(
                "{{ type = \"conv\", out_channels = {o}, kernel = {k}, stride = {s} }}"
            )),
        Just("{ type = \"batch_norm\" }".to_string()),
        Just("{ type = \"global_avg_pool\" }".to_string()),
        Just("{ type = \"activation\", kind = \"silu\" }".to_string()),
        any::<u32>().prop_map(|s| format!("{{ type = \"pool\", kind = \"avg\", size = {s} }}")),
        (0u32..10).prop_map(|s| format!("{{ type = \"pool\", kind = \"max\", size = {s} }}")),
        prop_oneof![
            any::<f32>().prop_map(|r| format!("{r:?}")),
            Just("nan".to_string()),
            Just("inf".to_string()),
        ]
        .prop_map(|r| format!("{{ type = \"dropout\", rate = {r} }}")),
        any::<u32>().prop_map(|u| format!("{{ type = \"dense\", units = {u} }}")),
        (0u32..5000).prop_map(|u| format!("{{ type = \"dense\", units = {u} }}")),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        4 => leaf,
        1 => proptest::collection::vec(block(depth - 1), 0..4)
            .prop_map(|body| format!("{{ type = \"residual\", body = [{}] }}", body.join(", "))),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn inline_genomes_with_extreme_numbers_never_panic(
        channels in prop_oneof![any::<u32>(), 0u32..70],
        height in prop_oneof![any::<u32>(), 0u32..5000],
        width in prop_oneof![any::<u32>(), 0u32..5000],
        classes in prop_oneof![any::<u32>(), 0u32..200_000],
        blocks in proptest::collection::vec(block(4), 0..40),
        max_params in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let text = format!(
            "{MINIMAL}[search]\nmax_params = {max_params}\n[[seeds]]\ngenome = {{ input = {{ channels = {channels}, height = {height}, width = {width} }}, num_classes = {classes}, blocks = [{}] }}\n",
            blocks.join(", ")
        );
        check(&text);
    }
}

/// Found by reasoning about the fuzzer's reach: 400 of the largest convolutions overflowed the
/// FLOP sum (a panic in a debug build, a wrapped count in a release build).
#[test]
fn a_network_too_large_to_count_is_refused_not_overflowed() {
    let block = "{ type = \"conv\", out_channels = 4096, kernel = 11, stride = 1 }";
    let text = format!(
        "{MINIMAL}[search]\nmax_params = 0\nmax_blocks = 200\n[[seeds]]\ngenome = {{ input = {{ channels = 64, height = 4096, width = 4096 }}, num_classes = 10, blocks = [{}] }}\n",
        vec![block; 400].join(", ")
    );
    let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
    assert!(
        err.contains("seeds[0].genome") && err.contains("too large"),
        "{err}"
    );
}

#[test]
fn deeply_nested_toml_is_an_error_not_a_stack_overflow() {
    let deep = format!("name = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(ExperimentSpec::from_toml(&deep).is_err());
    let deep = format!(
        "{MINIMAL}x = {}{}",
        "{ a = ".repeat(50_000),
        "}".repeat(50_000)
    );
    assert!(ExperimentSpec::from_toml(&deep).is_err());
}

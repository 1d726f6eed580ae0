//! Parse + expand + plan any text: must never panic, only return errors.
#![no_main]

use kiln_dockerfile::ignore::parse_ignore_file;
use kiln_dockerfile::shell::Lexer;
use kiln_dockerfile::{plan, Dockerfile, PlanOptions, Platform};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dockerfile) = Dockerfile::parse(text, "Dockerfile") {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let mut build_args = BTreeMap::new();
        build_args.insert("A".to_string(), "x y".to_string());
        let mut options = PlanOptions {
            build_args,
            target: None,
            build_platform: amd64.clone(),
            target_platform: amd64,
            ..PlanOptions::default()
        };
        let _ = plan(&dockerfile, &options);
        // Every named stage as a target, too.
        for stage in &dockerfile.stages {
            if let Some(name) = &stage.name {
                options.target = Some(name.clone());
                let _ = plan(&dockerfile, &options);
            }
        }
        for instruction in dockerfile.stages.iter().flat_map(|s| &s.instructions) {
            let _ = instruction.command.to_string();
        }
    }
    let env: Vec<(&str, &str)> = vec![("A", "a b"), ("B", "")];
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        let _ = lexer.process_word(text, &env);
        let _ = lexer.process_words(text, &env);
    }
    if let Ok(file) = parse_ignore_file(text) {
        if let Ok(matcher) = file.matcher() {
            let _ = matcher.is_excluded("a/b/c.txt");
            let _ = matcher.can_skip_dir("a");
        }
    }
});

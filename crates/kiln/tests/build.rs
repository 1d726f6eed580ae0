//! `kiln build` end to end: the real binary, a real registry with a busybox base image made
//! offline, and umoci/skopeo reading what kiln wrote. RUN steps need root (chroot backend).

mod common;

use common::World;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn run_copy_and_metadata_instructions_make_the_expected_image() {
    let world = World::new();
    let dockerfile = r#"ARG BASE
FROM $BASE
ENV GREETING=hello TARGET_DIR=/app
WORKDIR $TARGET_DIR
COPY hello.txt ./
RUN echo "$GREETING from $(pwd)" > made.txt && id -u > /app/uid.txt
USER app
RUN id -un > /tmp/who.txt
LABEL org.example.team=kiln
EXPOSE 8080 53/udp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/made.txt"]
STOPSIGNAL SIGTERM
"#;
    let built = world.build(dockerfile, &[("hello.txt", "hi there\n")], &[]);
    built.ok();
    let fs = built.unpack();
    assert_eq!(fs.read("/app/hello.txt"), "hi there\n");
    assert_eq!(fs.read("/app/made.txt"), "hello from /app\n");
    assert_eq!(fs.read("/app/uid.txt"), "0\n");
    assert_eq!(fs.read("/tmp/who.txt"), "app\n");
    assert_eq!(fs.meta("/app/hello.txt").uid(), 0);
    assert_eq!(fs.meta("/tmp").permissions().mode() & 0o7777, 0o1777);
    assert!(fs.exists("/bin/busybox"), "base layers are in the image");
    let config = built.config();
    let c = &config["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["Labels"]["org.example.team"], "kiln");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert!(c["ExposedPorts"]["53/udp"].is_object());
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat /app/made.txt"]));
    assert_eq!(c["StopSignal"], "SIGTERM");
    let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    assert!(env.contains(&"GREETING=hello".to_string()));
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
    let history = config["history"].as_array().unwrap();
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(non_empty, layers.len(), "one history entry per layer");
}

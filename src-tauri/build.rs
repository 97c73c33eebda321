// The Tauri config lives at the repository root (DESIGN.md: tauri.conf.json at the root), so it is
// named explicitly here and in `generate_context!`.
fn main() {
    println!("cargo:rerun-if-changed=../tauri.conf.json");
    println!("cargo:rerun-if-changed=../ui/dist");
    tauri_build::try_build(tauri_build::Attributes::new().config_path("../tauri.conf.json"))
        .expect("tauri build step (is ui/dist built? run ./run.sh or ./test.sh, which build it)");
}

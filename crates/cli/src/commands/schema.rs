use anyhow::Result;

pub fn run() -> Result<i32> {
    let schema = plano_core::config::json_schema();
    outln!("{}", serde_json::to_string_pretty(&schema)?)?;
    Ok(0)
}

//! The Tauri commands: the UI's only way into the desk. Thin on purpose — each one translates
//! arguments and calls [`Desk`]. Errors reach the UI as a [`DeskError`]: a machine-readable
//! `kind` and the officer's `message`. All are async:
//! Tauri runs synchronous commands on the UI thread, which must never wait for the desk's lock.

use std::sync::Arc;

use sosdesk::audit::CallSummary;
use tauri::State;

use crate::desk::Desk;
use crate::error::DeskError;
use crate::model::{
    ActiveCall, CallDetail, CallLeg, DeskStatus, FloorPlanImage, HistoryFilter, LegMode, Playback, Settings,
};

type DeskState<'a> = State<'a, Arc<Desk>>;

#[tauri::command]
pub async fn get_status(desk: DeskState<'_>) -> Result<DeskStatus, DeskError> {
    Ok(desk.status())
}

#[tauri::command]
pub async fn get_active_calls(desk: DeskState<'_>) -> Result<Vec<ActiveCall>, DeskError> {
    Ok(desk.active_calls())
}

#[tauri::command]
pub async fn acknowledge(desk: DeskState<'_>, call_id: String) -> Result<ActiveCall, DeskError> {
    desk.acknowledge(&call_id).await
}

#[tauri::command]
pub async fn dismiss(desk: DeskState<'_>, call_id: String) -> Result<(), DeskError> {
    desk.dismiss(&call_id)
}

#[tauri::command]
pub async fn search_history(desk: DeskState<'_>, filter: HistoryFilter) -> Result<Vec<CallSummary>, DeskError> {
    desk.search_history(&filter).await
}

#[tauri::command]
pub async fn call_detail(desk: DeskState<'_>, call_id: String) -> Result<CallDetail, DeskError> {
    desk.call_detail(&call_id).await
}

#[tauri::command]
pub async fn export_history_csv(desk: DeskState<'_>, filter: HistoryFilter) -> Result<String, DeskError> {
    desk.export_history_csv(&filter).await
}

#[tauri::command]
pub async fn get_settings(desk: DeskState<'_>) -> Result<Settings, DeskError> {
    Ok(desk.settings())
}

#[tauri::command]
pub async fn save_settings(desk: DeskState<'_>, settings: Settings) -> Result<Settings, DeskError> {
    desk.save_settings(settings).await
}

#[tauri::command]
pub async fn place_test_call(desk: DeskState<'_>) -> Result<String, DeskError> {
    desk.place_test_call(crate::testcall::default_hold()).await
}

#[tauri::command]
pub async fn alert_shown(
    desk: DeskState<'_>,
    call_id: String,
    seq: u32,
    page_ms: Option<f64>,
    dom_ms: Option<f64>,
) -> Result<(), DeskError> {
    desk.alert_shown(&call_id, seq, page_ms, dom_ms);
    Ok(())
}

#[tauri::command]
pub async fn page_ready(desk: DeskState<'_>, shown: Vec<String>) -> Result<u32, DeskError> {
    Ok(desk.page_ready(&shown))
}

#[tauri::command]
pub async fn join_call(desk: DeskState<'_>, call_id: String, mode: LegMode) -> Result<CallLeg, DeskError> {
    desk.join_call(&call_id, mode).await
}

#[tauri::command]
pub async fn get_leg(desk: DeskState<'_>) -> Result<Option<CallLeg>, DeskError> {
    Ok(desk.leg())
}

#[tauri::command]
pub async fn set_leg_mode(desk: DeskState<'_>, mode: LegMode) -> Result<(), DeskError> {
    desk.set_leg_mode(mode).await
}

#[tauri::command]
pub async fn mute_leg(desk: DeskState<'_>, muted: bool) -> Result<(), DeskError> {
    desk.mute_leg(muted).await
}

#[tauri::command]
pub async fn leave_call(desk: DeskState<'_>) -> Result<(), DeskError> {
    desk.leave_call().await
}

#[tauri::command]
pub async fn play_recording(desk: DeskState<'_>, call_id: String) -> Result<Playback, DeskError> {
    desk.play_recording(&call_id).await
}

#[tauri::command]
pub async fn stop_playback(desk: DeskState<'_>) -> Result<Option<Playback>, DeskError> {
    Ok(desk.stop_playback())
}

/// A floor plan's image (an ERL's `floor_plan.plan`), as a `data:` URL for an `<img>`.
#[tauri::command]
pub async fn floor_plan(desk: DeskState<'_>, plan: String) -> Result<FloorPlanImage, DeskError> {
    desk.floor_plan(&plan).await
}

/// Every command, for `tauri::Builder::invoke_handler` (the app and the mock-runtime tests).
#[macro_export]
macro_rules! desk_commands {
    () => {
        tauri::generate_handler![
            $crate::commands::get_status,
            $crate::commands::get_active_calls,
            $crate::commands::acknowledge,
            $crate::commands::dismiss,
            $crate::commands::search_history,
            $crate::commands::call_detail,
            $crate::commands::export_history_csv,
            $crate::commands::get_settings,
            $crate::commands::save_settings,
            $crate::commands::place_test_call,
            $crate::commands::alert_shown,
            $crate::commands::page_ready,
            $crate::commands::join_call,
            $crate::commands::get_leg,
            $crate::commands::set_leg_mode,
            $crate::commands::mute_leg,
            $crate::commands::leave_call,
            $crate::commands::play_recording,
            $crate::commands::stop_playback,
            $crate::commands::floor_plan
        ]
    };
}

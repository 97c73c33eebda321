//! Floor plans for the alert and the call detail (issue 16 item 4): the image an ERL's
//! `floor_plan` names, from the embedded core's store or the remote core's API (with this
//! desk's credentials), checked again here and handed to the UI as a `data:` URL that it shows
//! only in an `<img>` (where an SVG runs no script and loads nothing; the window's CSP allows
//! `data:` images and nothing else from outside).

use sosdesk::location::floorplan::check_image;

use super::link::Link;
use super::Desk;
use crate::error::DeskError;
use crate::model::FloorPlanImage;

impl Desk {
    /// The image of floor plan `plan` (its SHA-256, from an ERL's `floor_plan`).
    pub async fn floor_plan(&self, plan: &str) -> Result<FloorPlanImage, DeskError> {
        let bytes = match self.link().await? {
            Link::Embedded(core) => core
                .lis()
                .floor_plan_image(plan)
                .await
                .map_err(|e| DeskError::store(e.to_string()))?
                .map(|(_, bytes)| bytes),
            Link::Remote(r) => Some(r.api().floor_plan(plan).await?.1.to_vec()),
        };
        let bytes = bytes.ok_or_else(|| DeskError::invalid(format!("floor plan {plan} is not in the store")))?;
        // The same gate as the core's: what reaches the webview is a PNG or a harmless SVG, and
        // the plan the event named.
        let img = check_image(bytes).map_err(|e| DeskError::invalid(format!("floor plan not shown: {e}")))?;
        if img.sha256 != plan {
            return Err(DeskError::invalid("floor plan not shown: the image received is not the one named"));
        }
        let data_url = format!("data:{};base64,{}", img.media_type.as_str(), sosdesk::api::encode_base64(&img.bytes));
        Ok(FloorPlanImage { plan: plan.to_string(), media_type: img.media_type.as_str().to_string(), data_url })
    }
}

//! The CRI ImageService over [`crate::image`].

use crate::error::CridError;
use crate::image::{self, ImageInfo};
use crate::Crid;
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The ImageService.
pub struct ImageService(pub Arc<Crid>);

fn spec_of(s: &Option<cri::ImageSpec>) -> Result<&str, CridError> {
    match s.as_ref().map(|s| s.image.as_str()) {
        Some(i) if !i.is_empty() => Ok(i),
        _ => Err(CridError::Invalid(
            "no image given (ImageSpec.image is empty)".into(),
        )),
    }
}

#[tonic::async_trait]
impl cri::image_service_server::ImageService for ImageService {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let store = self.0.images.store.clone();
        let catalog = Arc::clone(&self.0.images.catalog);
        let images = tokio::task::spawn_blocking(move || -> Result<Vec<ImageInfo>, CridError> {
            Ok(match filter {
                Some(f) => image::find(&store, &catalog, &f)?.into_iter().collect(),
                None => image::list(&store, &catalog)?,
            })
        })
        .await
        .map_err(CridError::from)??;
        Ok(Response::new(cri::ListImagesResponse {
            images: images
                .iter()
                .map(|i| i.to_cri(&self.0.images.pins))
                .collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let spec = spec_of(&req.image)?.to_string();
        let store = self.0.images.store.clone();
        let catalog = Arc::clone(&self.0.images.catalog);
        let pins = self.0.images.pins.clone();
        let (image, info) = tokio::task::spawn_blocking(move || -> Result<_, CridError> {
            let Some(i) = image::find(&store, &catalog, &spec)? else {
                return Ok((None, HashMap::new()));
            };
            let mut info = HashMap::new();
            if req.verbose {
                let v = crikit::distribution::layout::inspect(&store, &i.names[0])?;
                info.insert("info".to_string(), v.to_string());
            }
            Ok((Some(i.to_cri(&pins)), info))
        })
        .await
        .map_err(CridError::from)??;
        // An image that is not there is no error: the CRI answers with no image.
        Ok(Response::new(cri::ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = spec_of(&req.image)?.to_string();
        crikit::distribution::reference::parse(&image)
            .map_err(|e| CridError::Invalid(format!("image {image:?}: {e}")))?;
        let creds = image::credentials(req.auth.as_ref())?;
        let namespace = req
            .sandbox_config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.namespace.as_str());
        let image_ref = self.0.images.pull(&image, creds, namespace).await?;
        Ok(Response::new(cri::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let spec = spec_of(&req.into_inner().image)?.to_string();
        let crid = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            crid.images.remove(&spec, |id| crid.store.image_user(id))
        })
        .await
        .map_err(CridError::from)??;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let root = self.0.settings.root.clone();
        let usage = tokio::task::spawn_blocking(move || image::fs_usage(&root))
            .await
            .map_err(CridError::from)?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}

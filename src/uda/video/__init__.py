"""Video UDA methods (issue 7): TPS temporal pseudo-supervision, video QuadMix, class-prototype MMD, the
optional teacher switch and the video LightningModule that combines them (udass.md §2.5-§2.8,
video_uda.md §3.3-§3.4)."""

-- What a job needs of the device (platform, device model, OS version), in the jobs
-- projection, so that the API can show and filter by it and a device matrix's run can
-- be reported per profile. The projector fills them from JobSubmitted; a rebuild fills
-- them for jobs submitted before.

alter table jobs
    add column platform text,
    add column device text,
    add column os_version text;

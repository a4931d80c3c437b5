pub mod pb {
    tonic::include_proto!("devicelink.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/devicelink_descriptor.bin"));
}

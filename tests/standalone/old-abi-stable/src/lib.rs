//! A root module exported with abi_stable 0.10: the host (abi_stable 0.11) must refuse the file
//! with a message naming both abi_stable ABI versions, and keep serving what it had.

use abi_stable::{
    export_root_module, library::RootModule, package_version_strings, prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings, StableAbi,
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = "OldModuleRef")))]
#[sabi(missing_field(panic))]
pub struct OldModule {
    #[sabi(last_prefix_field)]
    pub answer: extern "C" fn() -> u32,
}

impl RootModule for OldModuleRef {
    abi_stable::declare_root_module_statics! {OldModuleRef}
    const BASE_NAME: &'static str = "old_module";
    const NAME: &'static str = "old_module";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn answer() -> u32 {
    42
}

#[export_root_module]
pub fn get_library() -> OldModuleRef {
    OldModule { answer }.leak_into_prefix()
}

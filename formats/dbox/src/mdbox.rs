//! mdbox: messages in `storage/m.<file_id>` files shared by every mailbox, located through
//! the map index `storage/dovecot.map.index` (src/lib-storage/index/dbox-multi/).

use std::path::Path;

use mailstore::{Error, Mailbox, Result};

use crate::layout::Layout;

/// Placeholder until the mdbox mailbox lands.
pub struct MdboxMailbox;

impl MdboxMailbox {
    pub fn open(_layout: &Layout, _vname: &str) -> Result<Box<dyn Mailbox>> {
        Err(Error::NotPossible("mdbox is not implemented yet".into()))
    }
}

pub(crate) fn map_uid_validity(_layout: &Layout) -> Result<u32> {
    Err(Error::NotPossible("mdbox is not implemented yet".into()))
}

pub(crate) fn release_mailbox_refs(_layout: &Layout, _dir: &Path) -> Result<()> {
    Err(Error::NotPossible("mdbox is not implemented yet".into()))
}

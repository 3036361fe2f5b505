//! A directory laid out as the kubelet lays out a ConfigMap volume, and updated as it updates
//! one: each version in a timestamped directory, `..data` a symlink to the current one, the
//! file a symlink through `..data`; an update writes a new directory, points a `..data_tmp`
//! symlink at it and renames that over `..data` (one atomic step), then removes the old one.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct ConfigMapVolume {
    root: PathBuf,
    file: &'static str,
    version: usize,
}

impl ConfigMapVolume {
    /// Creates the volume under `parent` with `file` holding `content`.
    pub fn create(parent: &Path, file: &'static str, content: &str) -> ConfigMapVolume {
        let root = parent.join("configmap");
        std::fs::create_dir_all(&root).expect("volume directory");
        let mut volume = ConfigMapVolume {
            root,
            file,
            version: 0,
        };
        let first = volume.write_version(content);
        symlink(&first, volume.root.join("..data")).expect("..data symlink");
        symlink(Path::new("..data").join(file), volume.path()).expect("file symlink");
        volume
    }

    /// The path a pod's process is given: the symlink through `..data`.
    pub fn path(&self) -> PathBuf {
        self.root.join(self.file)
    }

    /// Swaps in `content` the kubelet's way.
    pub fn update(&mut self, content: &str) {
        let old = std::fs::read_link(self.root.join("..data")).expect("..data is a link");
        let next = self.write_version(content);
        let tmp = self.root.join("..data_tmp");
        symlink(&next, &tmp).expect("..data_tmp symlink");
        std::fs::rename(&tmp, self.root.join("..data")).expect("atomic rename over ..data");
        std::fs::remove_dir_all(self.root.join(old)).expect("old version removed");
    }

    /// Writes a new timestamped version directory; returns its name (relative, as the
    /// kubelet's links are).
    fn write_version(&mut self, content: &str) -> PathBuf {
        self.version += 1;
        let name = PathBuf::from(format!(
            "..2026_12_04_17_00_{:02}.{}",
            self.version,
            1000 + self.version
        ));
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir).expect("version directory");
        std::fs::write(dir.join(self.file), content).expect("write the version");
        name
    }
}

//! Feature groups: which input elements are switched between x and the background together.
//! Default: every element of a row is its own feature. `mask` gives a group id per element
//! (tables: column groups; images: superpixels); `patch` cuts the last axes into a grid.

use explaind_plugin_sdk::Error;

pub struct Groups {
    /// Group index (0..count) of every element of a row.
    pub of_element: Vec<usize>,
    /// Elements of each group, flattened; group g is `elements[starts[g]..starts[g + 1]]`.
    pub elements: Vec<usize>,
    pub starts: Vec<usize>,
}

impl Groups {
    pub fn count(&self) -> usize {
        self.starts.len() - 1
    }
    pub fn members(&self, g: usize) -> &[usize] {
        &self.elements[self.starts[g]..self.starts[g + 1]]
    }

    fn from_ids(ids: &[usize]) -> Self {
        let count = ids.iter().copied().max().map_or(0, |m| m + 1);
        let mut starts = vec![0usize; count + 1];
        for &g in ids {
            starts[g + 1] += 1;
        }
        for g in 0..count {
            starts[g + 1] += starts[g];
        }
        let mut fill = starts.clone();
        let mut elements = vec![0usize; ids.len()];
        for (e, &g) in ids.iter().enumerate() {
            elements[fill[g]] = e;
            fill[g] += 1;
        }
        Groups { of_element: ids.to_vec(), elements, starts }
    }

    /// Every element its own group.
    pub fn singletons(row_len: usize) -> Self {
        Self::from_ids(&(0..row_len).collect::<Vec<_>>())
    }

    /// Groups from a mask of ids (any non-negative integers); groups are ordered by id, and ids
    /// are renumbered densely, so an unused id does not make an empty group.
    pub fn from_mask(mask: &[i64], row_len: usize, item_shape: &[usize]) -> Result<Self, Error> {
        if mask.len() != row_len {
            return Err(Error::invalid_argument(format!(
                "parameters.mask: expected {row_len} group ids (one per element of an input row of shape {item_shape:?}), got {}",
                mask.len()
            )));
        }
        if let Some(bad) = mask.iter().position(|&g| g < 0) {
            return Err(Error::invalid_argument(format!("parameters.mask[{bad}]: group ids must be >= 0, got {}", mask[bad])));
        }
        let mut distinct: Vec<i64> = mask.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let ids: Vec<usize> = mask.iter().map(|g| distinct.binary_search(g).unwrap()).collect();
        Ok(Self::from_ids(&ids))
    }

    /// A grid of patches over the last `patch.len()` axes (cut at the edges); elements that
    /// differ only in the leading axes (an image's channels) share a patch. Patches are
    /// numbered row-major over the grid.
    pub fn from_patch(patch: &[i64], item_shape: &[usize]) -> Result<Self, Error> {
        let rank = item_shape.len();
        if patch.is_empty() || patch.len() > rank {
            return Err(Error::invalid_argument(format!(
                "parameters.patch: expected 1 to {rank} sizes for the last axes of an input row of shape {item_shape:?}, got {}",
                patch.len()
            )));
        }
        let lead = rank - patch.len();
        let mut counts = Vec::with_capacity(patch.len());
        for (i, &p) in patch.iter().enumerate() {
            let d = item_shape[lead + i];
            if p < 1 || p as usize > d {
                return Err(Error::invalid_argument(format!(
                    "parameters.patch[{i}]: {p} must be between 1 and the axis size {d}"
                )));
            }
            counts.push(d.div_ceil(p as usize));
        }
        let row_len: usize = item_shape.iter().product();
        let mut ids = vec![0usize; row_len];
        let mut index = vec![0usize; rank];
        for id in ids.iter_mut() {
            let mut g = 0;
            for i in 0..patch.len() {
                g = g * counts[i] + index[lead + i] / patch[i] as usize;
            }
            *id = g;
            // Odometer over the item's axes, last fastest.
            for axis in (0..rank).rev() {
                index[axis] += 1;
                if index[axis] < item_shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Ok(Self::from_ids(&ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_tile_an_image_and_share_channels() {
        let g = Groups::from_patch(&[2, 2], &[1, 8, 8]).unwrap();
        assert_eq!(g.count(), 16);
        assert_eq!(g.members(0), &[0, 1, 8, 9]);
        assert_eq!(g.members(15), &[54, 55, 62, 63]);
        // Two channels, 3x3 image, 2x2 patches: edge patches are cut; channels share.
        let g = Groups::from_patch(&[2, 2], &[2, 3, 3]).unwrap();
        assert_eq!(g.count(), 4);
        assert_eq!(g.members(0), &[0, 1, 3, 4, 9, 10, 12, 13]);
        assert_eq!(g.members(3), &[8, 17]);
    }

    #[test]
    fn masks_are_renumbered_by_id() {
        let g = Groups::from_mask(&[7, 3, 7, 100], 4, &[4]).unwrap();
        assert_eq!(g.count(), 3);
        assert_eq!(g.of_element, vec![1, 0, 1, 2]);
        assert_eq!(g.members(1), &[0, 2]);
    }

    #[test]
    fn bad_masks_and_patches_name_the_parameter() {
        let e = Groups::from_mask(&[0, 1], 3, &[3]).err().unwrap();
        assert!(e.message.starts_with("parameters.mask:"), "{}", e.message);
        let e = Groups::from_mask(&[0, -1, 1], 3, &[3]).err().unwrap();
        assert!(e.message.starts_with("parameters.mask[1]"), "{}", e.message);
        let e = Groups::from_patch(&[9, 2], &[1, 8, 8]).err().unwrap();
        assert!(e.message.starts_with("parameters.patch[0]"), "{}", e.message);
        let e = Groups::from_patch(&[1, 1, 1, 1], &[1, 8, 8]).err().unwrap();
        assert!(e.message.starts_with("parameters.patch:"), "{}", e.message);
    }
}

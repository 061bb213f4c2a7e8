//! The worker's sessions by index, with a free list and generations.

use super::{Entry, GEN_MASK, Slab, SlabSlot};

impl Slab {
    pub(super) fn insert(&mut self, entry: Entry) -> (u32, u32) {
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            slot.entry = Some(entry);
            (idx, slot.generation)
        } else {
            self.slots.push(SlabSlot {
                generation: 0,
                entry: Some(entry),
            });
            ((self.slots.len() - 1) as u32, 0)
        }
    }

    pub(super) fn get(&mut self, idx: u32, generation: u32) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(idx as usize)?;
        if slot.generation != generation & GEN_MASK {
            return None;
        }
        slot.entry.as_mut()
    }

    pub(super) fn get_any(&mut self, idx: u32) -> Option<(u32, &mut Entry)> {
        let slot = self.slots.get_mut(idx as usize)?;
        let generation = slot.generation;
        slot.entry.as_mut().map(|e| (generation, e))
    }

    pub(super) fn remove(&mut self, idx: u32) -> Option<Entry> {
        let slot = self.slots.get_mut(idx as usize)?;
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1) & GEN_MASK;
        self.free.push(idx);
        Some(entry)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u32, &mut Entry)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_mut().map(|e| (i as u32, s.generation, e)))
    }
}

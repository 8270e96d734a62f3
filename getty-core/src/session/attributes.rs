//! Per-session attributes, typed: a key names its value's type, so a lookup can never return
//! the wrong type (getty keyed an untyped map by `interface{}`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

/// A typed attribute key: `const USER: AttrKey<String> = AttrKey::new("user");`.
pub struct AttrKey<T> {
    name: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> AttrKey<T> {
    pub const fn new(name: &'static str) -> Self {
        AttrKey {
            name,
            _t: PhantomData,
        }
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> fmt::Debug for AttrKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttrKey({})", self.name)
    }
}

/// The attribute map; two keys with the same name but different types do not collide.
#[derive(Default)]
pub(crate) struct Attributes {
    map: HashMap<(&'static str, TypeId), Box<dyn Any + Send + Sync>>,
}

impl Attributes {
    pub(crate) fn get<T: Clone + Send + Sync + 'static>(&self, key: &AttrKey<T>) -> Option<T> {
        self.map
            .get(&(key.name, TypeId::of::<T>()))
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    pub(crate) fn set<T: Send + Sync + 'static>(&mut self, key: &AttrKey<T>, v: T) -> Option<T> {
        self.map
            .insert((key.name, TypeId::of::<T>()), Box::new(v))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    pub(crate) fn remove<T: Send + Sync + 'static>(&mut self, key: &AttrKey<T>) -> Option<T> {
        self.map
            .remove(&(key.name, TypeId::of::<T>()))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

//! A manager: ten processes fill one dict and one list that live in a manager process;
//! then a custom type registered with the manager, called through its proxy.
//!
//! Mirrors the "Managers" section of the seed `/work/shared/seeds/001_39d6c5e4a59ba50e.txt`
//! (the seed `003_3b9ef70041973d61.txt` names managers but leaves them out):
//!
//! ```python
//! def fun1(dic, lis, index):
//!     dic[index] = 'a'
//!     lis.append(index)
//!
//! with Manager() as manager:
//!     dic = manager.dict()
//!     l = manager.list(range(5))
//!     process_list = []
//!     for i in range(10):
//!         p = Process(target=fun1, args=(dic, l, i))
//!         p.start()
//!         process_list.append(p)
//!     for res in process_list:
//!         res.join()
//!     print(dic)
//!     print(l)
//!
//! class MyObj:
//!     def __init__(self):
//!         self.x = 0
//!     def inc(self):
//!         self.x += 1
//!         return self.x
//!
//! MyManager.register('MyObj', MyObj)
//! mgr = MyManager()
//! mgr.start()
//! obj = mgr.MyObj()
//! print(obj.inc())
//! ```
//!
//! `manager.dict()` is a typed `DictProxy<u32, String>` and `manager.list(range(5))` a
//! `ListProxy<u32>`; both travel to the children inside their arguments and call the one
//! manager process. Leaving Python's `with` block is dropping the `Manager`, which shuts
//! its process down. `MyObj` is a [`SharedObject`] whose request is the method to call;
//! the manager must be told of it before it starts (`register`), as in Python.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example manager
//! ```
//!
//! Expected output (the children finish in any order, so the order of the dict's keys and
//! of the list's last ten items changes from run to run, as in the seed):
//!
//! ```text
//! {0: 'a', 1: 'a', 2: 'a', 4: 'a', 3: 'a', 6: 'a', 5: 'a', 8: 'a', 9: 'a', 7: 'a'}
//! [0, 1, 2, 3, 4, 0, 1, 2, 4, 3, 6, 5, 8, 9, 7]
//! 1
//! ```

use procvisor::Process;
use procvisor::manager::{DictProxy, ListProxy, Manager, SharedObject};

/// The child: `dic[index] = 'a'` and `lis.append(index)`.
fn fun1((dic, lis, index): (DictProxy<u32, String>, ListProxy<u32>, u32)) {
    dic.set(&index, &"a".to_owned()).unwrap();
    lis.append(&index).unwrap();
}

/// Python's `MyObj`, whose one method is `inc`.
#[derive(Default)]
struct MyObj {
    x: i64,
}

/// The methods of `MyObj` a proxy may call.
#[derive(serde::Serialize, serde::Deserialize)]
enum MyObjCall {
    Inc,
}

impl SharedObject for MyObj {
    const TYPEID: &'static str = "MyObj";
    type Request = MyObjCall;
    type Response = i64;
    fn handle(&mut self, call: MyObjCall) -> i64 {
        match call {
            MyObjCall::Inc => {
                self.x += 1;
                self.x
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    {
        let manager = Manager::start()?;
        let dic = manager.dict::<u32, String>()?;
        let l = manager.list(0..5u32)?;
        let mut process_list = Vec::new();
        for i in 0..10 {
            let mut p: Process = Process::new(fun1, (dic.clone(), l.clone(), i));
            p.start()?;
            process_list.push(p);
        }
        for res in &process_list {
            res.join(None)?;
            if res.exitcode()? != Some(0) {
                return Err(format!("{} ended with {:?}", res.name(), res.exitcode()?).into());
            }
        }
        // Python's repr of the dict and the list.
        let items: Vec<String> = dic
            .items()?
            .iter()
            .map(|(k, v)| format!("{k}: '{v}'"))
            .collect();
        println!("{{{}}}", items.join(", "));
        println!("{:?}", l.to_vec()?);
    } // the manager shuts down here, as at the end of Python's `with`

    let mgr = Manager::builder().register::<MyObj>().start()?;
    let obj = mgr.create::<MyObj>()?;
    println!("{}", obj.call(&MyObjCall::Inc)?);
    Ok(())
}

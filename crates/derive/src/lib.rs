//! `#[derive(Module)]` for eddy: implements `eddy_nn::Module<F>` for a struct from its fields.
//! Use it through `eddy_nn::Module` (or `eddy::prelude::*`), where the trait and the derive
//! share the name; its documentation is on [`macro@Module`].

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, ToTokens};
use syn::{parse_macro_input, Data, DeriveInput, Expr, Fields, GenericArgument, PathArguments, Type};

/// Implements `Module<F>` for a struct with named fields.
///
/// - A field of type `Param<F>` is a parameter named after the field; an `Option<Param<F>>`
///   one is listed when it is `Some`.
/// - A field marked `#[module]` is a nested module (any type implementing `Module<F>`): its
///   parameters are listed as `field.name`, and `set_training` is passed on to it.
/// - Other fields (sizes, flags) are left out.
/// - For a cell, `#[cell(input = axis)]` on a parameter says the input size is that axis of its
///   shape, and `#[cell(state = axis)]` (or `state = axis / k`) adds a state part of that size,
///   in field order: the derive writes `Module::cell_sizes`, which `Cell::input_size` and
///   `Cell::state_sizes` default to.
///
/// `F` is the element type of the first `Param` field (or `#[module(float = T)]` on the
/// struct). The trait is named as `::eddy_nn::Module` when the crate depends on `eddy-nn` (or
/// is it), else as `::eddy::nn::Module` (the facade); `#[module(crate = "path")]` names another.
///
/// # Expansion
/// ```text
/// #[derive(Module)]
/// struct Janet {
///     #[cell(input = 1)]
///     w: Param<f32>,
///     #[cell(state = 1)]
///     u: Param<f32>,
///     b: Option<Param<f32>>,
///     #[module]
///     norm: LayerNorm<f32>,
///     hidden: usize,
/// }
/// ```
/// becomes
/// ```text
/// impl ::eddy_nn::Module<f32> for Janet {
///     fn params(&self) -> Vec<(String, Param<f32>)> {
///         let mut out = Vec::new();
///         out.push(("w".to_string(), self.w.clone()));
///         out.push(("u".to_string(), self.u.clone()));
///         if let Some(p) = &self.b { out.push(("b".to_string(), p.clone())); }
///         out.extend(::eddy_nn::prefixed("norm", ::eddy_nn::Module::params(&self.norm)));
///         out
///     }
///     fn set_training(&mut self, training: bool) {
///         ::eddy_nn::Module::set_training(&mut self.norm, training);
///     }
///     fn cell_sizes(&self) -> Option<::eddy_nn::CellSizes> {
///         Some(::eddy_nn::CellSizes { input: self.w.shape()[1], states: vec![self.u.shape()[1]] })
///     }
/// }
/// ```
#[proc_macro_derive(Module, attributes(module, cell))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(|e| e.to_compile_error()).into()
}

/// The options on the struct: `#[module(crate = "path", float = T)]`.
struct StructOptions {
    krate: Option<syn::Path>,
    float: Option<Type>,
}

fn struct_options(input: &DeriveInput) -> syn::Result<StructOptions> {
    let mut o = StructOptions {
        krate: None,
        float: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let s: syn::LitStr = meta.value()?.parse()?;
                o.krate = Some(s.parse()?);
            } else if meta.path.is_ident("float") {
                o.float = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error("expected `crate = \"path\"` or `float = T`"));
            }
            Ok(())
        })?;
    }
    Ok(o)
}

/// The crate the trait lives in, as the deriving crate can name it.
fn default_crate() -> syn::Path {
    let own = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .ok()
        .and_then(|d| std::fs::read_to_string(std::path::Path::new(&d).join("Cargo.toml")).ok())
        .unwrap_or_default();
    let depends_on_nn = manifest.lines().any(|l| {
        let l = l.trim_start();
        ["eddy-nn", "eddy_nn"].iter().any(|n| {
            l.strip_prefix(n)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
        })
    });
    if own == "eddy-nn" || depends_on_nn {
        syn::parse_quote!(::eddy_nn)
    } else {
        syn::parse_quote!(::eddy::nn)
    }
}

/// `T` when `ty` is `Param<T>` (by its last path segment).
fn param_of(ty: &Type) -> Option<&Type> {
    generic_arg(ty, "Param")
}

fn generic_arg<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// `axis` or `axis / k` from `#[cell(state = …)]`.
fn axis_expr(field: &syn::Ident, e: &Expr) -> syn::Result<Tokens> {
    let axis = |e: &Expr| -> syn::Result<syn::LitInt> {
        match e {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(i),
                ..
            }) => Ok(i.clone()),
            _ => Err(syn::Error::new_spanned(
                e,
                "expected an axis (an integer), or `axis / k`",
            )),
        }
    };
    match e {
        Expr::Binary(b) if matches!(b.op, syn::BinOp::Div(_)) => {
            let (a, k) = (axis(&b.left)?, axis(&b.right)?);
            Ok(quote!(self.#field.shape()[#a] / #k))
        }
        _ => {
            let a = axis(e)?;
            Ok(quote!(self.#field.shape()[#a]))
        }
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(input, "derive(Module) needs a struct"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            input,
            "derive(Module) needs named fields",
        ));
    };
    let opts = struct_options(input)?;
    let krate = opts.krate.unwrap_or_else(default_crate);
    let mut float = opts.float;
    let (mut params, mut training, mut nested_bounds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut input_size, mut states) = (None, Vec::new());
    for f in &fields.named {
        let ident = f.ident.as_ref().expect("named fields");
        let name = ident.to_string();
        let nested = f.attrs.iter().any(|a| a.path().is_ident("module"));
        let optional = generic_arg(&f.ty, "Option").and_then(param_of);
        if nested {
            let ty = &f.ty;
            params.push(quote!(out.extend(#krate::prefixed(#name, #krate::Module::params(&self.#ident)));));
            training.push(quote!(#krate::Module::set_training(&mut self.#ident, training);));
            nested_bounds.push(ty.to_token_stream());
        } else if let Some(t) = param_of(&f.ty) {
            float.get_or_insert_with(|| t.clone());
            params.push(quote!(out.push((#name.to_string(), self.#ident.clone()));));
        } else if let Some(t) = optional {
            float.get_or_insert_with(|| t.clone());
            params.push(quote!(if let Some(p) = &self.#ident { out.push((#name.to_string(), p.clone())); }));
        }
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("cell")) {
            if param_of(&f.ty).is_none() {
                return Err(syn::Error::new_spanned(
                    attr,
                    "#[cell(…)] goes on a `Param` field",
                ));
            }
            attr.parse_nested_meta(|meta| {
                let e: Expr = meta.value()?.parse()?;
                if meta.path.is_ident("input") {
                    if input_size.is_some() {
                        return Err(meta.error("the input size is given twice"));
                    }
                    input_size = Some(axis_expr(ident, &e)?);
                } else if meta.path.is_ident("state") {
                    states.push(axis_expr(ident, &e)?);
                } else {
                    return Err(meta.error("expected `input = axis` or `state = axis`"));
                }
                Ok(())
            })?;
        }
    }
    let Some(float) = float else {
        return Err(syn::Error::new_spanned(
            input,
            "derive(Module) finds the float type from a `Param<F>` field; with none, say `#[module(float = F)]`",
        ));
    };
    let sizes =
        match (input_size, states.is_empty()) {
            (None, true) => quote!(),
            (Some(i), false) => quote! {
                fn cell_sizes(&self) -> Option<#krate::CellSizes> {
                    Some(#krate::CellSizes { input: #i, states: vec![#(#states),*] })
                }
            },
            _ => return Err(syn::Error::new_spanned(
                input,
                "a cell's sizes need both `#[cell(input = axis)]` and at least one `#[cell(state = axis)]`",
            )),
        };
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::parse_quote!(where));
    for ty in nested_bounds {
        where_clause
            .predicates
            .push(syn::parse_quote!(#ty: #krate::Module<#float>));
    }
    let set_training = (!training.is_empty()).then(|| {
        quote! {
            fn set_training(&mut self, training: bool) {
                #(#training)*
            }
        }
    });
    Ok(quote! {
        impl #impl_generics #krate::Module<#float> for #name #ty_generics #where_clause {
            fn params(&self) -> ::std::vec::Vec<(::std::string::String, #krate::__derive::Param<#float>)> {
                #[allow(unused_mut)]
                let mut out = ::std::vec::Vec::new();
                #(#params)*
                out
            }
            #set_training
            #sizes
        }
    })
}
